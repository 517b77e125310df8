import base64
import json

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.html import escape

from mail.registry import BACKENDS, provider_fields_by_type
from mailsetup.forms import FocusesFirstError
from providers.addresses import Address, AddressError, normalize_address
from providers.forms import ProviderCardForm
from providers.models import EmailProvider, LoginFormat, Security
from providers.services import DRAFT_FIELDS

from .models import EmailAccount, FolderMode, SyncPeriod
from .signatures import MAX_IMAGE_BYTES, SignatureError, clean_signature, image_type

# The port each security mode usually means, for filling in a new server's form.
IMAP_DEFAULT_PORT = {Security.SSL_TLS: 993, Security.STARTTLS: 143, Security.NONE: 143}
SMTP_DEFAULT_PORT = {Security.SSL_TLS: 465, Security.STARTTLS: 587, Security.NONE: 25}


class AddressForm(FocusesFirstError, forms.Form):
    address = forms.CharField(
        label="Email address",
        max_length=320,
        # A text field with the e-mail keyboard, not type="email": browsers refuse a
        # name with letters outside ASCII before the @ ("jürgen@…", RFC 6531, which the
        # app takes) with a message of their own; the app's names what is wrong.
        widget=forms.TextInput(
            attrs={
                "autocomplete": "email",
                "autofocus": True,
                "inputmode": "email",
                "spellcheck": "false",
                "autocapitalize": "none",
            }
        ),
    )

    def clean_address(self) -> Address:
        try:
            return normalize_address(self.cleaned_data["address"])
        except AddressError as error:
            raise forms.ValidationError(str(error)) from None


class ProviderPickForm(forms.Form):
    provider = forms.ModelChoiceField(
        queryset=EmailProvider.objects.none(),
        widget=forms.RadioSelect,
        error_messages={
            "required": "Choose your email provider from the list.",
            "invalid_choice": "Choose your email provider from the list.",
        },
    )

    def __init__(self, *args, offered, **kwargs):
        super().__init__(*args, **kwargs)
        # Only what the list offers for this address (accounts.selectors.providers_offered).
        self.fields["provider"].queryset = offered


class CredentialsForm(FocusesFirstError, forms.Form):
    login = forms.CharField(label="Login", max_length=254, required=False)
    password = forms.CharField(
        label="Password",
        strip=False,
        # Never sent back to the browser, not even after an error.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        error_messages={"required": "Enter the password (or app password) of this mailbox."},
    )

    def __init__(self, *args, provider: EmailProvider, autofocus: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.provider = provider
        if provider.login_format != LoginFormat.MANUAL:
            del self.fields["login"]
        else:
            self.fields["login"].required = True
            self.fields["login"].error_messages["required"] = (
                f"Enter the login name {provider.name} gave you for this mailbox."
            )
        if provider.app_password_required:
            self.fields["password"].label = "App password"
        if autofocus:
            # The wizard step's first field takes the focus, on a page load as after
            # htmx's swap (htmx focuses what carries autofocus).
            next(iter(self.fields.values())).widget.attrs["autofocus"] = True


class NewServerForm(FocusesFirstError, ProviderCardForm):
    """The wizard's "Add new server": the essentials of a provider card, with the
    admin's rules for host names (ProviderCardForm)."""

    class Meta:
        model = EmailProvider
        # What a draft holds until the sign-in check passes (providers.services).
        fields = list(DRAFT_FIELDS)
        error_messages = {
            "name": {
                "unique": "A provider of this name exists already: go back and choose it "
                "from the list, or give this server another name."
            }
        }
        widgets = {
            "imap_port": forms.NumberInput(attrs={"data-port-for": "imap"}),
            "smtp_port": forms.NumberInput(attrs={"data-port-for": "smtp"}),
            "imap_security": forms.Select(attrs={"data-security-for": "imap"}),
            "smtp_security": forms.Select(attrs={"data-security-for": "smtp"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The step's first field takes the focus, on a page load as after htmx's swap.
        next(iter(self.fields.values())).widget.attrs["autofocus"] = True
        # Which fields each service type uses, as its backend declares them: the page's
        # script shows those of the chosen type and hides the other types' own.
        self.fields["service_type"].widget.attrs["data-fields-by-type"] = json.dumps(
            provider_fields_by_type()
        )

    def clean(self):
        data = super().clean()
        # Without JavaScript nothing filled the ports in: take the usual one for the
        # chosen security, as the page says (for a type whose card has these fields).
        backend = BACKENDS.get(data.get("service_type"))
        uses = backend.provider_fields if backend else ()
        for port, security, usual in (
            ("imap_port", "imap_security", IMAP_DEFAULT_PORT),
            ("smtp_port", "smtp_security", SMTP_DEFAULT_PORT),
        ):
            if port in uses and not data.get(port) and data.get(security):
                data[port] = usual[data[security]]
        return data


class ShownValuesForm(forms.ModelForm):
    """A settings section that carries, beside each field, the value it had when the
    page was shown (Django's hidden initial), and a marker that says so. A save then
    writes only the fields its user changed (`touched`), so another section, another
    tab or another user's change to the rest is never overwritten; and `shown` tells
    a field someone else changed meanwhile (accounts.services.SettingsConflict)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.show_hidden_initial = True

    @property
    def shown_marker(self) -> str:
        return self.add_prefix("shown")

    def _came_with_shown(self) -> bool:
        return self.shown_marker in self.data

    def _shown(self, name: str):
        field = self.fields[name]
        if not self._came_with_shown():
            # Posted without what it showed (a client of its own): the saved values.
            return self[name].initial
        data = field.hidden_widget().value_from_datadict(
            self.data, self.files, self[name].html_initial_name
        )
        return field.to_python(data)

    def touched(self) -> list[str]:
        """The fields whose posted value differs from the one shown."""
        names = []
        for name, field in self.fields.items():
            try:
                shown = self._shown(name)
            except ValidationError:
                names.append(name)
                continue
            if field.has_changed(shown, self[name].data):
                names.append(name)
        return names

    def shown(self, names: list[str]) -> dict:
        """The values the fields had on the user's page (none if the form did not say)."""
        if not self._came_with_shown():
            return {}
        values = {}
        for name in names:
            try:
                values[name] = self._shown(name)
            except ValidationError:
                continue
        return values

    def data_reshown(self, now: dict):
        """The posted data, showing `now` as the values the page was shown with: after
        a conflict, saving again replaces what someone else saved meanwhile."""
        data = self.data.copy()
        for name, value in now.items():
            key = self[name].html_initial_name
            if isinstance(value, list | tuple):
                data.setlist(key, [str(item) for item in value])
            else:
                data[key] = "" if value is None else str(self.fields[name].prepare_value(value))
        data[self.shown_marker] = "1"
        return data


class PeriodSelect(forms.Select):
    """The period beside the "Download mail for period" switch. With the switch off the
    list is disabled and reads "All" (what is saved, and what a save gets); on, it
    offers the periods, a week first for a mailbox that downloaded everything."""

    def __init__(self, *, off: bool, choices):
        self.off = off
        if off:
            choices = [(SyncPeriod.ALL, SyncPeriod.ALL.label), *choices]
        super().__init__(attrs={"disabled": True} if off else None, choices=choices)

    def format_value(self, value):
        if self.off:
            return [SyncPeriod.ALL]
        return [
            SyncPeriod.WEEK if item == SyncPeriod.ALL else item
            for item in super().format_value(value)
        ]


class DownloadSettingsForm(ShownValuesForm):
    """Settings page, "Download emails": the documented "Download mail for period"
    switch with the period beside it; off means every email (the period "All").

    The switch is the page's way to say "All"; a client that posts only `sync_period`
    (without the page's shown values) still says it with "all"."""

    period_limited = forms.BooleanField(
        label="Download mail for period",
        required=False,
        widget=forms.CheckboxInput(attrs={"role": "switch"}),
    )

    class Meta:
        model = EmailAccount
        # The folder choice comes with the folder picker, which reads the server's tree.
        fields = ["period_limited", "sync_period", "auto_sync"]
        labels = {"sync_period": "Period"}
        error_messages = {
            "sync_period": {"invalid_choice": "Choose one of the periods in the list."},
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial["period_limited"] = self.instance.sync_period != SyncPeriod.ALL
        field = self.fields["sync_period"]
        # The list is disabled (and so not posted) while the switch is off: the page's
        # script enables it as the switch is turned on.
        field.widget = PeriodSelect(
            off=not self["period_limited"].value(),
            choices=[(value, label) for value, label in field.choices if value != SyncPeriod.ALL],
        )

    def clean(self):
        cleaned = super().clean()
        if not self._came_with_shown():
            return cleaned
        if not cleaned.get("period_limited"):
            # The switch wins over whatever period came with it: every email, and the
            # list shows "All" after the save.
            cleaned["sync_period"] = SyncPeriod.ALL
            self.errors.pop("sync_period", None)
        elif not self.data.get(self.add_prefix("sync_period")) or (
            cleaned.get("sync_period") == SyncPeriod.ALL
        ):
            # Turned on while the list was disabled (no script) or still read "All":
            # the week the list offers first, which the page then shows.
            cleaned["sync_period"] = SyncPeriod.WEEK
            self.errors.pop("sync_period", None)
        return cleaned

    def touched(self) -> list[str]:
        # The switch and the list are one setting: compared as the period they mean.
        names = [
            name for name in super().touched() if name not in {"period_limited", "sync_period"}
        ]
        try:
            shown = self._shown("sync_period")
        except ValidationError:
            shown = None
        if shown != self.cleaned_data["sync_period"]:
            names.insert(0, "sync_period")
        return names


class MeetingsSettingsForm(ShownValuesForm):
    """Settings page, "Meetings and tasks" (Exchange)."""

    class Meta:
        model = EmailAccount
        fields = ["meetings_import", "meetings_period", "meetings_auto"]
        help_texts = {
            "meetings_period": "Meetings of this period and those ahead of today become "
            "activities on the timelines of the contacts and companies they involve.",
        }
        error_messages = {
            "meetings_period": {"invalid_choice": "Choose one of the periods in the list."},
        }


class ContactsSettingsForm(ShownValuesForm):
    """Settings page, "Contacts" (Exchange): the address book folders to import are
    those the last download found."""

    contacts_folders = forms.MultipleChoiceField(
        label="Contact folders", required=False, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = EmailAccount
        fields = ["contacts_import", "contacts_folders", "contacts_export"]
        labels = {"contacts_export": "Export the people you write with to the Contacts folder"}
        error_messages = {
            "contacts_import": {"invalid_choice": "Choose how to import contacts from the list."},
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        paths = list(
            self.instance.folders.filter(special_use="\\contacts").values_list("path", flat=True)
        )
        field = self.fields["contacts_folders"]
        field.choices = [(path, path) for path in paths]
        field.error_messages["invalid_choice"] = (
            "%(value)s is not one of the mailbox's contact folders any more."
        )
        if not paths:
            field.help_text = "The folders appear here after the first download."

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("contacts_import") == "folders" and not cleaned.get("contacts_folders"):
            self.add_error("contacts_folders", "Choose at least one folder, or import all.")
        return cleaned


class SendSettingsForm(ShownValuesForm):
    """Settings page, "Send emails" (the signature has its own section)."""

    message_language = forms.ChoiceField(label="Message language", required=False)

    class Meta:
        model = EmailAccount
        fields = ["send_enabled", "is_default_sender", "display_name", "message_language"]
        labels = {
            "is_default_sender": "Use this mailbox as the default when sending emails",
            "display_name": "Custom display name",
        }
        help_texts = {"display_name": "Shown to recipients beside the address."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # By name, as people look for their language (Django lists them by code).
        by_name = sorted(settings.LANGUAGES, key=lambda language: str(language[1]).casefold())
        self.fields["message_language"].choices = [("", "Same as the app"), *by_name]
        self.fields["message_language"].error_messages["invalid_choice"] = (
            "Choose a message language from the list."
        )

    def clean_display_name(self) -> str:
        name = self.cleaned_data["display_name"].strip()
        # The name goes into a From header: a line break there would start a new header.
        if any(ch in name for ch in "\r\n\0"):
            raise forms.ValidationError("The display name cannot contain line breaks.")
        return name

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("is_default_sender") and not cleaned.get("send_enabled"):
            self.add_error(
                "is_default_sender",
                "Turn on “Send emails using this mailbox” to make it the default.",
            )
        return cleaned


class FolderChoiceForm(forms.Form):
    """Settings page, the folders part of "Download emails"."""

    folder_mode = forms.ChoiceField(
        label="Folders", choices=FolderMode.choices, widget=forms.RadioSelect
    )
    chosen = forms.TypedMultipleChoiceField(label="Folders", coerce=int, required=False)
    subfolders = forms.TypedMultipleChoiceField(label="With subfolders", coerce=int, required=False)

    def __init__(self, *args, folders, **kwargs):
        super().__init__(*args, **kwargs)
        ids = [(folder.pk, folder.path) for folder in folders]
        self.fields["chosen"].choices = ids
        self.fields["subfolders"].choices = ids
        for name in ("chosen", "subfolders"):
            self.fields[name].error_messages["invalid_choice"] = (
                "That folder is no longer on the server: load the folder list again."
            )

    def clean(self):
        cleaned = super().clean()
        picked = cleaned.get("chosen") or cleaned.get("subfolders")
        if cleaned.get("folder_mode") == FolderMode.CUSTOM and not picked:
            self.add_error(
                "chosen", "Choose at least one folder, or download all emails from mailbox."
            )
        return cleaned


class SignatureForm(forms.Form):
    """Settings page, "Add signatures to outbound emails"."""

    signature_html = forms.CharField(
        label="Signature", required=False, widget=forms.Textarea(attrs={"rows": 6})
    )
    # Ticking it reveals the editor (CSS alone, no script needed); unticking keeps the
    # signature for later and stops adding it.
    add_signature = forms.BooleanField(label="Add signatures to outbound emails", required=False)
    # Whether the box was ticked on the page: a save changes the setting only if the
    # user did.
    add_signature_shown = forms.CharField(required=False, widget=forms.HiddenInput)
    # The digest of the signature as the page showed it: a save writes the signature
    # only if the user changed it, and notices one saved elsewhere meanwhile.
    shown = forms.CharField(required=False, widget=forms.HiddenInput)
    image = forms.FileField(
        label="Add an image",
        required=False,
        help_text="PNG, JPEG, GIF or WebP, at most 1 MB; at most 5 images per signature.",
    )

    def clean(self):
        cleaned = super().clean()
        html = cleaned.get("signature_html") or ""
        image = cleaned.get("image")
        if image is not None:
            if image.size > MAX_IMAGE_BYTES:
                self.add_error("image", f"The image is {image.size / 1e6:.1f} MB; at most 1 MB.")
                return cleaned
            content = image.read()
            kind = image_type(content)
            if kind is None:
                self.add_error("image", "Use a PNG, JPEG, GIF or WebP image.")
                return cleaned
            # Without JavaScript the upload arrives here and joins the signature's end.
            data = base64.b64encode(content).decode()
            name = escape(image.name or "image")
            html += f'<p><img src="data:{kind};base64,{data}" alt="{name}"></p>'
        try:
            cleaned["signature_html"] = clean_signature(html).html
        except SignatureError as error:
            self.add_error("signature_html", str(error))
            # The editor shows what was posted again, so the user can fix it: sanitised
            # like a saved signature, never as it came (it would run in the page).
            data = self.data.copy()
            data[self.add_prefix("signature_html")] = clean_signature(html, strict=False).html
            self.data = data
        return cleaned
