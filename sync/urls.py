from django.urls import path

from . import live, views

app_name = "sync"

urlpatterns = [
    path("emails/<int:pk>/", views.email_detail, name="email"),
    # Whether emails arrived since a page was drawn (issue 18; sync/live.py).
    path("emails/new/", live.new_emails, name="new_emails"),
    path("emails/<int:pk>/original/", views.original_download, name="original"),
    path(
        "emails/<int:pk>/attachments/<int:attachment_pk>/",
        views.attachment_download,
        name="attachment",
    ),
    path("emails/<int:pk>/inline/<int:part_pk>/", views.inline_part, name="inline"),
    path("mailboxes/<int:pk>/download/", views.download_now, name="download"),
    path("mailboxes/<int:pk>/sync-status/", views.sync_status_partial, name="status"),
    path("mailboxes/<int:pk>/problems/", views.mailbox_problems, name="problems"),
]
