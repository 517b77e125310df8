from django.apps import AppConfig


class PushConfig(AppConfig):
    """New mail in seconds: the listener that watches mailboxes (IMAP IDLE) and queues
    their sync as soon as the server says something changed (issue 18)."""

    name = "push"

    def ready(self) -> None:
        from accounts import signals

        from . import receivers

        signals.protocol_changed.connect(
            receivers.protocol_changed, dispatch_uid="push-protocol-changed"
        )
