import re
from email.utils import parseaddr

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.template.defaultfilters import filesizeformat

from mailsetup.forms import FocusesFirstError
from providers.addresses import AddressError, normalize_domain

# Commas between addresses, not inside a quoted display name.
SEPARATOR = re.compile(r"""[,;](?=(?:[^"]*"[^"]*")*[^"]*$)""")
# Every character str.splitlines() breaks a line at (an email header could not hold
# it: building the message failed with a 500), and NUL.
LINE_BREAKS = ("\r", "\n", "\0", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def people(value: str) -> list[dict]:
    """ "Ann <ann@x.test>, bob@y.test" as [{"name", "address"}]. Every piece that is not
    an address is named in the error; a line break anywhere is refused, as it could
    start a header of its own."""
    if any(ch in value for ch in LINE_BREAKS):
        raise ValidationError("Addresses cannot contain line breaks.")
    found, bad = [], []
    for piece in SEPARATOR.split(value):
        piece = piece.strip()
        if not piece:
            continue
        name, address = parseaddr(piece)
        try:
            validate_email(address)
            # An international domain as SMTP and the headers carry it (IDNA 2008, as
            # the wizard reads domains): "anna@bücher.test" was written into the To
            # header as an encoded word, and smtplib could not send it at all.
            local, _at, domain = address.rpartition("@")
            if not domain.isascii():
                address = f"{local}@{normalize_domain(domain)}"
        except (ValidationError, AddressError):
            bad.append(piece)
            continue
        found.append({"name": name.strip(), "address": address})
    if bad:
        listed = ", ".join(f"“{piece}”" for piece in bad)
        verb = "is not a valid email address" if len(bad) == 1 else "are not valid email addresses"
        raise ValidationError(f"{listed} {verb}.")
    return found


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    widget = MultipleFileInput

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else [data] if data else []
        return [super(MultipleFileField, self).clean(item, initial) for item in files]


class ComposeForm(FocusesFirstError, forms.Form):
    sender = forms.TypedChoiceField(label="From", coerce=int)
    to = forms.CharField(label="To", required=False)
    cc = forms.CharField(label="Cc", required=False)
    bcc = forms.CharField(label="Bcc", required=False)
    subject = forms.CharField(label="Subject", required=False, max_length=900)
    body = forms.CharField(
        label="Message", required=False, widget=forms.Textarea(attrs={"rows": 12})
    )
    attachments = MultipleFileField(label="Attachments", required=False)
    # What this is an answer to: the server reads the original itself (threading
    # headers are never taken from the form).
    reply = forms.IntegerField(required=False, widget=forms.HiddenInput)
    mode = forms.ChoiceField(
        required=False,
        choices=[("", ""), ("reply", "reply"), ("all", "reply all"), ("forward", "forward")],
        widget=forms.HiddenInput,
    )
    # "Edit as a new email": the email it is written again from (read by the view,
    # the author's own or not found).
    again = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, mailboxes, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["sender"].choices = [
            (m.pk, f"{m.display_name} <{m.address}>" if m.display_name else m.address)
            for m in mailboxes
        ]
        self.fields["sender"].error_messages["invalid_choice"] = (
            "Choose one of the mailboxes you may send from."
        )

    def _people(self, name: str) -> list[dict]:
        return people(self.cleaned_data.get(name) or "")

    def clean_to(self):
        return self._people("to")

    def clean_cc(self):
        return self._people("cc")

    def clean_bcc(self):
        return self._people("bcc")

    def clean_subject(self) -> str:
        subject = self.cleaned_data["subject"]
        if any(ch in subject for ch in LINE_BREAKS):
            raise ValidationError("The subject cannot contain line breaks.")
        return subject.strip()

    def clean_attachments(self):
        files = self.cleaned_data.get("attachments") or []
        total = sum(f.size for f in files)
        limit = settings.SEND_ATTACHMENTS_MAX_BYTES
        if total > limit:
            said, allowed = filesizeformat(total), filesizeformat(limit)
            if said == allowed:  # "20.0 MB; at most 20.0 MB": the bytes tell them apart
                said, allowed = f"{total:,} bytes", f"{limit:,} bytes"
            raise ValidationError(
                f"Together the files are {said}; at most "
                f"{allowed} can be sent. Choose fewer or smaller files."
            )
        return files

    def clean(self):
        cleaned = super().clean()
        if not self.errors and not (cleaned.get("to") or cleaned.get("cc") or cleaned.get("bcc")):
            self.add_error("to", "Enter at least one recipient.")
        return cleaned
