from django.apps import AppConfig


class SharingConfig(AppConfig):
    """Shared mailboxes: grants to users and roles (the sharing issue)."""

    name = "sharing"

    def ready(self) -> None:
        from . import receivers  # noqa: F401 - connects them
