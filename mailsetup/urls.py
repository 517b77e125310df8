from django.contrib import admin
from django.urls import path

from . import views

admin.site.site_header = "mailsetup administration"
admin.site.site_title = "mailsetup"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
