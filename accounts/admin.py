from django.contrib import admin

from .models import AccountChange


@admin.register(AccountChange)
class AccountChangeAdmin(admin.ModelAdmin):
    """The settings audit trail: read-only, for admins."""

    list_display = ["created_at", "address", "actor", "field", "old_value", "new_value"]
    list_filter = ["field"]
    search_fields = ["address", "actor__username", "field"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
