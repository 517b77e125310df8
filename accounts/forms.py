from django import forms

from providers.addresses import Address, AddressError, normalize_address, normalize_domain
from providers.models import EmailProvider, LoginFormat, Security, ServiceType

# The port each security mode usually means, for filling in a new server's form.
IMAP_DEFAULT_PORT = {Security.SSL_TLS: 993, Security.STARTTLS: 143, Security.NONE: 143}
SMTP_DEFAULT_PORT = {Security.SSL_TLS: 465, Security.STARTTLS: 587, Security.NONE: 25}


class AddressForm(forms.Form):
    address = forms.CharField(
        label="Email address",
        max_length=320,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )

    def clean_address(self) -> Address:
        try:
            return normalize_address(self.cleaned_data["address"])
        except AddressError as error:
            raise forms.ValidationError(str(error)) from None


class ProviderPickForm(forms.Form):
    provider = forms.ModelChoiceField(
        queryset=EmailProvider.objects.all(),
        widget=forms.RadioSelect,
        error_messages={"required": "Choose your email provider from the list."},
    )


class CredentialsForm(forms.Form):
    login = forms.CharField(label="Login", max_length=254, required=False)
    password = forms.CharField(
        label="Password",
        strip=False,
        # Never sent back to the browser, not even after an error.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        error_messages={"required": "Enter the password (or app password) of this mailbox."},
    )

    def __init__(self, *args, provider: EmailProvider, **kwargs):
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


class NewServerForm(forms.ModelForm):
    """The wizard's "Add new server": the essentials of a provider card."""

    class Meta:
        model = EmailProvider
        fields = [
            "name",
            "service_type",
            "receive_enabled",
            "send_enabled",
            "imap_host",
            "imap_security",
            "imap_port",
            "smtp_host",
            "smtp_security",
            "smtp_port",
            "exchange_url",
            "login_format",
        ]
        widgets = {
            "imap_port": forms.NumberInput(attrs={"data-port-for": "imap"}),
            "smtp_port": forms.NumberInput(attrs={"data-port-for": "smtp"}),
            "imap_security": forms.Select(attrs={"data-security-for": "imap"}),
            "smtp_security": forms.Select(attrs={"data-security-for": "smtp"}),
        }

    def clean(self):
        data = super().clean()
        # Without JavaScript nothing filled the ports in: take the usual one for the
        # chosen security, as the page says.
        if data.get("service_type") == ServiceType.IMAP_SMTP:
            if not data.get("imap_port") and data.get("imap_security"):
                data["imap_port"] = IMAP_DEFAULT_PORT[data["imap_security"]]
            if not data.get("smtp_port") and data.get("smtp_security"):
                data["smtp_port"] = SMTP_DEFAULT_PORT[data["smtp_security"]]
        return data

    def _clean_host(self, name: str) -> str:
        value = self.cleaned_data.get(name, "").strip().lower()
        if value:
            try:
                normalize_domain(value.replace("%emaildomain%", "example.com"))
            except AddressError as error:
                raise forms.ValidationError(
                    f"Enter a server name such as mail.example.com. {error}"
                ) from None
        return value.replace("%emaildomain%", "%EMAILDOMAIN%")

    def clean_imap_host(self) -> str:
        return self._clean_host("imap_host")

    def clean_smtp_host(self) -> str:
        return self._clean_host("smtp_host")
