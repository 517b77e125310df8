from django.contrib import admin

from .definitions import DEFINITIONS
from .models import SystemSetting


@admin.register(SystemSetting)
class SystemSettingAdmin(admin.ModelAdmin):
    list_display = ["code", "value", "value_type", "description", "updated_at"]
    search_fields = ["code", "description"]

    def get_readonly_fields(self, request, obj=None):
        # Settings the code defines keep their code, type and description; only the value
        # is the admin's.
        if obj is not None and obj.code in DEFINITIONS:
            return ["code", "value_type", "description", "updated_at"]
        return ["updated_at"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        definition = DEFINITIONS.get(obj.code) if obj is not None else None
        if definition is not None and "value" in form.base_fields:
            form.base_fields["value"].help_text = allowed(definition)
        return form


def allowed(definition) -> str:
    """What the value may be, said before an error has to say it."""
    if definition.value_type == "boolean":
        return f"Yes or no (default: {'yes' if definition.default else 'no'})."
    if definition.value_type == "integer":
        unit = f" {definition.unit}" if definition.unit else ""
        span = ""
        if definition.minimum is not None and definition.maximum is not None:
            span = f" from {definition.minimum:,} to {definition.maximum:,}"
        return f"A whole number{span}{unit} (default: {definition.default:,})."
    return f"Text (default: {definition.default!r})."
