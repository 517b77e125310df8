from django.contrib import admin

from .definitions import DEFINITIONS
from .models import SystemSetting


@admin.register(SystemSetting)
class SystemSettingAdmin(admin.ModelAdmin):
    list_display = ["code", "value", "value_type", "description", "updated_at"]
    search_fields = ["code", "description"]

    def get_readonly_fields(self, request, obj=None):
        # Settings the code defines keep their code and type; only the value is the admin's.
        if obj is not None and obj.code in DEFINITIONS:
            return ["code", "value_type", "updated_at"]
        return ["updated_at"]
