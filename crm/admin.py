from django.contrib import admin

from .models import Company, Contact, ContactAddress


class ContactAddressInline(admin.TabularInline):
    model = ContactAddress
    extra = 1


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ["name", "company", "created_at"]
    search_fields = ["name", "addresses__address", "company__name"]
    autocomplete_fields = ["company"]
    inlines = [ContactAddressInline]


@admin.register(Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = ["name", "web_domain", "created_at"]
    search_fields = ["name", "web_domain"]
