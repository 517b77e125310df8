"""What the app's forms do alike."""


class FocusesFirstError:
    """After a submit with mistakes, the first field that has one takes the focus (its
    widget carries `autofocus`, which a page load and htmx's swap both honour), instead
    of the form's first field or nothing at all: the person lands on what to correct,
    and a screen reader reads its error (aria-describedby). Errors of the whole form
    alone (a sign-in the server refused) leave the focus as the form set it."""

    def full_clean(self):
        super().full_clean()
        self._focus_first_error()

    def add_error(self, field, error):
        # Also after cleaning: a view adds what the server said (a refused password).
        super().add_error(field, error)
        self._focus_first_error()

    def _focus_first_error(self) -> None:
        errors = self._errors or {}
        first = next(
            (
                name
                for name, field in self.fields.items()
                if name in errors and not field.widget.is_hidden
            ),
            None,
        )
        if first is None:
            return
        for field in self.fields.values():
            field.widget.attrs.pop("autofocus", None)
        self.fields[first].widget.attrs["autofocus"] = True
