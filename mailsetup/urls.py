from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views

admin.site.site_header = "mailsetup administration"
admin.site.site_title = "mailsetup"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    # The operator's "Mailbox health" page (under admin/) and /metrics (issue 18).
    path("", include("health.urls")),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("accounts.urls")),
    path("", include("sync.urls")),
    path("", include("crm.urls")),
    path("", include("sharing.urls")),
    path("", include("sending.urls")),
]
