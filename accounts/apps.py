from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users' mailboxes: the add-mailbox wizard and per-account settings (coming issues)."""

    name = "accounts"

    def ready(self) -> None:
        # The login throttle's checks (the app's own sign-in lives beside the mailboxes').
        from mailsetup import checks  # noqa: F401
