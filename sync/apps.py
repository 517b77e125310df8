from django.apps import AppConfig


class SyncConfig(AppConfig):
    """Downloading mail over IMAP and EWS with Celery (the sync issue)."""

    name = "sync"
