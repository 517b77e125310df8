from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users' mailboxes: the add-mailbox wizard and per-account settings (coming issues)."""

    name = "accounts"
