from django import forms
from django.contrib import admin

from .models import Company, Contact, ContactAddress, EmailLinkChange, address_key
from .signals import contacts_addressed


class ContactAddressForm(forms.ModelForm):
    class Meta:
        model = ContactAddress
        fields = ["address"]

    def clean_address(self) -> str:
        # Here, not only in the model: the inline's check that two rows differ reads
        # these values ("Carl@x.test" and "carl@x.test" in one save failed the save).
        return address_key(self.cleaned_data["address"])


class ContactAddressInline(admin.TabularInline):
    model = ContactAddress
    form = ContactAddressForm
    extra = 1


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ["name", "company", "created_at"]
    search_fields = ["name", "addresses__address", "company__name"]
    autocomplete_fields = ["company"]
    inlines = [ContactAddressInline]

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # A contact given an address (or a company) after its emails were downloaded
        # shows them on its timeline; a change of its phone asks for nothing.
        if "company" in form.changed_data or any(f.has_changed() for f in formsets):
            contacts_addressed.send(sender=Contact, contact_ids=[form.instance.pk])


@admin.register(Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = ["name", "web_domain", "created_at"]
    search_fields = ["name", "web_domain"]


@admin.register(EmailLinkChange)
class EmailLinkChangeAdmin(admin.ModelAdmin):
    """The record of emails linked and unlinked by hand: read, never edited."""

    list_display = ["created_at", "actor", "action", "kind", "target", "subject"]
    list_filter = ["action", "kind"]
    search_fields = ["target", "subject", "actor__username"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
