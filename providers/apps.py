from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "providers"
    verbose_name = "Email providers"

    def ready(self) -> None:
        # The hosted-mail platform table is data: check it at start, so a malformed row
        # stops the app with the row named instead of misleading a user later.
        from .platforms import platforms

        platforms()
