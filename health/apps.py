from django.apps import AppConfig


class HealthConfig(AppConfig):
    """The operator's view of every mailbox (issue 18): the "Mailbox health" page and the
    Prometheus endpoint. It only reads: it sits on top of the other apps' selectors and
    models, and nothing imports it."""

    name = "health"
