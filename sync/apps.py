from django.apps import AppConfig


class SyncConfig(AppConfig):
    """Downloading mail over IMAP and EWS with Celery (the sync issue)."""

    name = "sync"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from accounts.models import EmailAccount
        from accounts.signals import mailbox_deleting
        from providers.models import EmailProvider

        from .files import mailbox_files_delete_on_commit
        from .services import provider_changed

        # A mailbox stopped by its provider's settings (a certificate, a port, the
        # security) is tried again once an administrator saves the provider.
        post_save.connect(provider_changed, sender=EmailProvider, dispatch_uid="sync-provider")
        # A mailbox removed with its emails: their files go after the commit.
        mailbox_deleting.connect(
            mailbox_files_delete_on_commit, sender=EmailAccount, dispatch_uid="sync-files"
        )
