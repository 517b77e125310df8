from django.apps import AppConfig


class SendingConfig(AppConfig):
    """Writing and sending emails from the app: compose, SMTP delivery, the Sent copy."""

    name = "sending"
