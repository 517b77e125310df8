from django.apps import AppConfig


class SystemSettingsConfig(AppConfig):
    name = "systemsettings"
    verbose_name = "System settings"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from .selectors import cache_clear

        def clear(**kwargs) -> None:
            cache_clear()

        for signal in (post_save, post_delete):
            signal.connect(clear, sender=self.get_model("SystemSetting"), weak=False)
