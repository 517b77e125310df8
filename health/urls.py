from django.urls import path

from . import views

app_name = "health"

# Under admin/ for the operator's pages (included before the admin's own URLs, whose
# catch-all would answer them otherwise).
urlpatterns = [
    path("admin/mailbox-health/", views.health_page, name="mailboxes"),
    path("admin/mailbox-health/<int:pk>/runs/", views.mailbox_runs, name="runs"),
    path("metrics", views.metrics, name="metrics"),
]
