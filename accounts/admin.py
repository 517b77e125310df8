from django.contrib import admin

from mailsetup.admin import ReadOnlyAdmin

from .models import AccountChange


@admin.register(AccountChange)
class AccountChangeAdmin(ReadOnlyAdmin):
    """The settings audit trail: read-only, for admins."""

    list_display = ["created_at", "address", "actor", "field", "old_value", "new_value"]
    list_filter = ["field"]
    search_fields = ["address", "actor__username", "field"]
    date_hierarchy = "created_at"
