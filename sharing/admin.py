from django.contrib import admin

from mailsetup.admin import ReadOnlyAdmin

from .models import GrantChange, MailboxGrant


@admin.register(MailboxGrant)
class MailboxGrantAdmin(ReadOnlyAdmin):
    """Who shares which mailbox. Grants are changed on the mailbox's settings page, where
    every change is checked and logged; here they are only read."""

    list_display = ["account", "user", "group", "can_access", "can_send", "can_setup"]

    def has_delete_permission(self, request, obj=None) -> bool:
        # Never here; but a user or role an administrator deletes takes its grants with
        # it (logged by sharing.receivers), and Django's admin asks this of every row
        # the deletion would take: without it, no user or role with a grant could go.
        # Whoever may delete the user or role (Django checks that) may let its grants go.
        match = getattr(request, "resolver_match", None)
        return match is None or not (match.url_name or "").startswith("sharing_mailboxgrant")

    list_filter = ["can_access", "can_send", "can_setup"]
    search_fields = ["account__address", "user__username", "group__name"]


@admin.register(GrantChange)
class GrantChangeAdmin(ReadOnlyAdmin):
    """The grants audit trail: who granted what to whom, when, and what it was before."""

    list_display = ["created_at", "address", "actor", "grantee", "before", "after"]
    search_fields = ["address", "actor__username", "grantee"]
    date_hierarchy = "created_at"
