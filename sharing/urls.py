from django.urls import path

from . import views

app_name = "sharing"

urlpatterns = [
    path("mailboxes/<int:pk>/sharing/", views.mailbox_sharing, name="mailbox"),
    path("mailboxes/<int:pk>/sharing/grantees/", views.grantee_search, name="grantees"),
    path(
        "mailboxes/<int:pk>/sharing/revoke-removed/",
        views.removed_grants_revoke,
        name="revoke_removed",
    ),
]
