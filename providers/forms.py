"""What every form that edits a provider card shares: the wizard's "Add new server"
(accounts.forms.NewServerForm) and the provider admin (providers.admin.EmailProviderForm)
take a server's host name by the same rule and show one message per field."""

import ipaddress

from django import forms

from systemsettings.selectors import internal_mail_servers_allowed

from .addresses import AddressError, normalize_domain
from .models import IMAP_PORTS, PLACEHOLDER, SMTP_PORTS, Security
from .naming import impersonation_error


def mail_host(raw: str | None, *, allow_internal: bool | None = None) -> str:
    """A mail server's host name as it is stored: trimmed, lower case, `%EMAILDOMAIN%`
    kept (it stands for the address's domain).

    `localhost` and IP addresses are accepted only while the system setting
    AllowInternalMailServers is on, which is when the sign-in check may connect to
    internal servers at all; off, the name a certificate is issued to is asked for.
    Raises ValidationError with one message that says what to type.
    """
    value = (raw or "").strip()
    if not value:
        return ""
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        ip = None
    if ip is not None or value.lower().rstrip(".") == "localhost":
        if allow_internal is None:
            allow_internal = internal_mail_servers_allowed()
        if allow_internal:
            return str(ip) if ip is not None else "localhost"
        what = "an IP address" if ip is not None else "localhost"
        raise forms.ValidationError(
            f"{value} is {what}: enter the server's name, such as mail.example.com. IP "
            "addresses and localhost are accepted only while the system setting "
            "AllowInternalMailServers is on.",
            code="internal_host",
        )
    lowered = value.lower()
    try:
        normalize_domain(lowered.replace(PLACEHOLDER.lower(), "example.com"))
    except AddressError as error:
        raise forms.ValidationError(
            f"Enter a server name such as mail.example.com. {error}", code="host"
        ) from None
    return lowered.replace(PLACEHOLDER.lower(), PLACEHOLDER)


class ProviderCardForm(forms.ModelForm):
    """Base of the provider forms: the host rule above, and the model's cross-field
    rules (EmailProvider.clean) only for fields whose own value passed. A server name
    refused for its spelling must not also read "Enter the IMAP server"."""

    def clean_name(self) -> str:
        """No name that could pass for a built-in provider's (providers.naming); a
        built-in card keeps its own name."""
        name = (self.cleaned_data.get("name") or "").strip()
        if "name" in self.changed_data or self.instance.pk is None:
            refusal = impersonation_error(name)
            if refusal:
                raise forms.ValidationError(refusal, code="impersonation")
        return name

    def clean_imap_host(self) -> str:
        return mail_host(self.cleaned_data.get("imap_host"))

    def clean(self):
        cleaned = super().clean()
        # A well-known port with the other security: every sign-in would fail (TLS spoken
        # to a port that waits for STARTTLS, or the reverse), found only by the first
        # user. Encryption off is another matter (the card's own rules say when).
        for kind, ports in (("imap", IMAP_PORTS), ("smtp", SMTP_PORTS)):
            port, security = cleaned.get(f"{kind}_port"), cleaned.get(f"{kind}_security")
            expected = ports.get(port)
            if expected and security and security != Security.NONE and security != expected:
                usual = next(p for p, s in ports.items() if s == security)
                self.add_error(
                    f"{kind}_security",
                    f"Port {port} is for {Security(expected).label}: choose "
                    f"{Security(expected).label}, or port {usual} for "
                    f"{Security(security).label}.",
                )
        return cleaned

    def clean_smtp_host(self) -> str:
        return mail_host(self.cleaned_data.get("smtp_host"))

    def _update_errors(self, errors):
        # Called with the model's validation errors (ModelForm._post_clean).
        if hasattr(errors, "error_dict"):
            fresh = {
                name: messages
                for name, messages in errors.error_dict.items()
                if name not in self._errors
            }
            if not fresh:
                return
            errors = forms.ValidationError(fresh)
        super()._update_errors(errors)
