from django import forms
from django.contrib import admin
from django.urls import reverse

from .addresses import AddressError, normalize_domain
from .forms import ProviderCardForm
from .models import EmailProvider, ProviderDomain, Source

PERMISSION = "providers.manage_email_providers"


class ManageProvidersOnly:
    """Only holders of "manage email providers" see or touch the provider directory,
    whatever model permissions a staff user may also have been given."""

    def has_module_permission(self, request):
        return request.user.has_perm(PERMISSION)

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(PERMISSION)

    def has_add_permission(self, request, *args):
        return request.user.has_perm(PERMISSION)

    def has_change_permission(self, request, obj=None):
        return request.user.has_perm(PERMISSION)

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm(PERMISSION)


class EmailProviderForm(ProviderCardForm):
    oauth_client_secret = forms.CharField(
        label="OAuth client secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted and never shown again. Leave empty to keep the current one.",
    )
    clear_oauth_client_secret = forms.BooleanField(
        label="Remove the stored client secret", required=False
    )

    class Meta:
        model = EmailProvider
        fields = [
            "name",
            "service_type",
            "receive_enabled",
            "send_enabled",
            "imap_host",
            "imap_port",
            "imap_security",
            "smtp_host",
            "smtp_port",
            "smtp_security",
            "stores_sent_copy",
            "exchange_url",
            "login_format",
            "auth_method",
            "oauth_client_id",
            "oauth_tenant",
            "oauth_authorize_url",
            "oauth_token_url",
            "oauth_revoke_url",
            "oauth_secret_expires_on",
            "app_password_required",
            "app_password_help_url",
            "security_guide",
            "mx_suffixes",
        ]

    def _https(self, name: str) -> str:
        """An OAuth address: https only, and (unless internal servers are allowed) not
        on an internal network address: the app posts the client secret and tokens to
        the token and revocation addresses, reads the OpenID configuration under the
        authorization address, and sends people to type their password there."""
        from accounts.oauth import endpoint_refusal

        url = self.cleaned_data.get(name, "")
        if url and not url.lower().startswith("https://"):
            raise forms.ValidationError("Use an https:// address: tokens must travel encrypted.")
        refusal = url and endpoint_refusal(url)
        if refusal:
            raise forms.ValidationError(refusal)
        return url

    def clean_oauth_authorize_url(self) -> str:
        return self._https("oauth_authorize_url")

    def clean_oauth_token_url(self) -> str:
        return self._https("oauth_token_url")

    def clean_oauth_revoke_url(self) -> str:
        return self._https("oauth_revoke_url")

    def save(self, commit=True):
        provider = super().save(commit=False)
        if self.cleaned_data.get("clear_oauth_client_secret"):
            provider.set_oauth_client_secret("")
        elif self.cleaned_data.get("oauth_client_secret"):
            provider.set_oauth_client_secret(self.cleaned_data["oauth_client_secret"])
        if commit:
            provider.save()
            self.save_m2m()
        return provider


class ProviderDomainForm(forms.ModelForm):
    class Meta:
        model = ProviderDomain
        fields = ["domain"]

    def clean_domain(self) -> str:
        # The spelling stored, so that the rows' own duplicate check compares it:
        # "dup.test" and "Dup.test" on one page reached the database's unique key (500).
        try:
            return normalize_domain(self.cleaned_data["domain"])
        except AddressError as error:
            raise forms.ValidationError(str(error)) from None


class ProviderDomainInline(ManageProvidersOnly, admin.TabularInline):
    model = ProviderDomain
    form = ProviderDomainForm
    extra = 1
    fields = ["domain", "source"]
    readonly_fields = ["source"]


@admin.register(EmailProvider)
class EmailProviderAdmin(ManageProvidersOnly, admin.ModelAdmin):
    form = EmailProviderForm
    list_display = [
        "name",
        "service_type",
        "imap_host",
        "smtp_host",
        "auth_method",
        "oauth_secret_expires_on",
        "app_password_required",
        "source",
    ]
    list_filter = ["service_type", "auth_method", "app_password_required", "source"]
    search_fields = ["name", "imap_host", "smtp_host", "domains__domain"]
    inlines = [ProviderDomainInline]
    readonly_fields = ["source", "ispdb_id", "oauth_secret_status", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "service_type", "receive_enabled", "send_enabled"]}),
        ("IMAP", {"fields": ["imap_host", "imap_port", "imap_security"]}),
        ("SMTP", {"fields": ["smtp_host", "smtp_port", "smtp_security", "stores_sent_copy"]}),
        ("Exchange", {"fields": ["exchange_url"]}),
        (
            "Signing in",
            {
                "fields": [
                    "login_format",
                    "auth_method",
                    "oauth_client_id",
                    "oauth_tenant",
                    "oauth_authorize_url",
                    "oauth_token_url",
                    "oauth_revoke_url",
                    "oauth_secret_status",
                    "oauth_client_secret",
                    "clear_oauth_client_secret",
                    "oauth_secret_expires_on",
                    "app_password_required",
                    "app_password_help_url",
                    "security_guide",
                ]
            },
        ),
        (
            "Discovery",
            {"fields": ["mx_suffixes", "source", "ispdb_id", "created_at", "updated_at"]},
        ),
    ]

    def get_fieldsets(self, request, obj=None):
        # The address the provider must accept as redirect URI, as this app is reached.
        callback = request.build_absolute_uri(reverse("accounts:oauth_callback"))
        fieldsets = []
        for name, options in super().get_fieldsets(request, obj):
            if name == "Signing in":
                options = {
                    **options,
                    "description": "For OAuth 2.0, register an application with the provider "
                    f"and give it this redirect URI: {callback}",
                }
            fieldsets.append((name, options))
        return fieldsets

    @admin.display(description="Stored client secret")
    def oauth_secret_status(self, obj):
        return "set" if obj and obj.has_oauth_client_secret else "not set"

    def save_model(self, request, obj, form, change):
        # A provider an admin edited is the admin's now: imports must not overwrite it.
        if not change or form.changed_data:
            obj.source = Source.ADMIN
        super().save_model(request, obj, form, change)


@admin.register(ProviderDomain)
class ProviderDomainAdmin(ManageProvidersOnly, admin.ModelAdmin):
    list_display = ["domain", "provider", "source", "created_at"]
    list_filter = ["source"]
    search_fields = ["domain", "provider__name"]
    autocomplete_fields = ["provider"]
    readonly_fields = ["source", "created_at"]

    def save_model(self, request, obj, form, change):
        obj.source = Source.ADMIN
        super().save_model(request, obj, form, change)
