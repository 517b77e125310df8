from django.apps import AppConfig


class PushConfig(AppConfig):
    """New mail in seconds: the listener that watches mailboxes (IMAP IDLE) and queues
    their sync as soon as the server says something changed (issue 18)."""

    name = "push"
