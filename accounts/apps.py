from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users' mailboxes: the add-mailbox wizard and per-account settings (coming issues)."""

    name = "accounts"

    def ready(self) -> None:
        # The mail backends hand their provider card rules to providers' models
        # (providers.models.CARD_RULES) when the registry is imported; the login
        # throttle's checks (the app's own sign-in lives beside the mailboxes').
        import mail.registry  # noqa: F401
        from mailsetup import checks  # noqa: F401
