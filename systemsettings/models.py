from difflib import get_close_matches

from django.core.exceptions import ValidationError
from django.db import models

from .definitions import DEFINITIONS


class ValueType(models.TextChoices):
    INTEGER = "integer", "Whole number"
    BOOLEAN = "boolean", "Yes/no"
    TEXT = "text", "Text"


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


class SystemSetting(models.Model):
    code = models.CharField(max_length=100, unique=True)
    value_type = models.CharField(max_length=10, choices=ValueType.choices)
    value = models.CharField(max_length=1000, blank=True)
    description = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code

    def typed_value(self) -> int | bool | str:
        """The value as its type; raises ValidationError naming the setting if malformed."""
        text = self.value.strip()
        if self.value_type == ValueType.INTEGER:
            try:
                number = int(text)
            except ValueError:
                raise ValidationError(
                    {"value": f"{self.code} must be a whole number, not {text!r}."}
                ) from None
            definition = DEFINITIONS.get(self.code)
            if definition and definition.minimum is not None and number < definition.minimum:
                raise ValidationError(
                    {"value": f"{self.code} must be at least {definition.minimum}."}
                )
            if definition and definition.maximum is not None and number > definition.maximum:
                raise ValidationError(
                    {"value": f"{self.code} can be at most {definition.maximum}."}
                )
            return number
        if self.value_type == ValueType.BOOLEAN:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValidationError({"value": f"{self.code} must be yes or no, not {text!r}."})
        return self.value

    def clean(self) -> None:
        definition = DEFINITIONS.get(self.code)
        if definition is None:
            # A setting no code reads would be saved and do nothing ("MailboxSyncIntervall").
            close = get_close_matches(self.code, DEFINITIONS, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ValidationError(
                {
                    "code": f"The app reads no setting named {self.code!r}.{hint} The settings "
                    f"are: {', '.join(sorted(DEFINITIONS))}."
                }
            )
        if self.value_type != definition.value_type:
            raise ValidationError(
                {"value_type": f"{self.code} is {_article(definition.value_type)} setting."}
            )
        self.typed_value()


def _article(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"
