from django.apps import AppConfig


class CrmConfig(AppConfig):
    """The CRM's contacts and companies that emails are linked to (the sync issue)."""

    name = "crm"
