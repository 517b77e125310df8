from django.contrib import admin

from mailsetup.admin import ReadOnlyAdmin

from .models import GrantChange, MailboxGrant


@admin.register(MailboxGrant)
class MailboxGrantAdmin(ReadOnlyAdmin):
    """Who shares which mailbox. Grants are changed on the mailbox's settings page, where
    every change is checked and logged; here they are only read."""

    list_display = ["account", "user", "group", "can_access", "can_send", "can_setup"]
    list_filter = ["can_access", "can_send", "can_setup"]
    search_fields = ["account__address", "user__username", "group__name"]


@admin.register(GrantChange)
class GrantChangeAdmin(ReadOnlyAdmin):
    """The grants audit trail: who granted what to whom, when, and what it was before."""

    list_display = ["created_at", "address", "actor", "grantee", "before", "after"]
    search_fields = ["address", "actor__username", "grantee"]
    date_hierarchy = "created_at"
