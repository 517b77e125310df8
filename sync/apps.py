from django.apps import AppConfig


class SyncConfig(AppConfig):
    """Downloading mail over IMAP and EWS with Celery (the sync issue)."""

    name = "sync"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from accounts import signals
        from accounts.models import EmailAccount
        from providers.models import EmailProvider

        from . import receivers
        from .files import mailbox_files_delete_on_commit
        from .services import provider_changed

        # A mailbox stopped by its provider's settings (a certificate, a port, the
        # security) is tried again once an administrator saves the provider.
        post_save.connect(provider_changed, sender=EmailProvider, dispatch_uid="sync-provider")
        # A mailbox removed with its emails: their files go after the commit.
        signals.mailbox_deleting.connect(
            mailbox_files_delete_on_commit, sender=EmailAccount, dispatch_uid="sync-files"
        )
        # What accounts' services say happened to a mailbox, turned into downloads.
        signals.signed_in_again.connect(receivers.signed_in_again, dispatch_uid="sync-signed-in")
        signals.download_wanted.connect(receivers.download_wanted, dispatch_uid="sync-download")
        signals.protocol_changed.connect(
            receivers.protocol_changed, dispatch_uid="sync-protocol-changed"
        )
        # A contact given addresses by hand: the emails downloaded before it, linked.
        from crm.signals import contacts_addressed

        contacts_addressed.connect(receivers.contacts_addressed, dispatch_uid="sync-contacts")
