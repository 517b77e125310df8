"""Reads of the CRM's contacts and companies."""

from .models import Company, Contact


def _one(queryset):
    found = list(queryset[:2])
    return found[0] if len(found) == 1 else None


def company_by_name(name: str) -> Company | None:
    """The one company of that name (any case); none when there is none or several."""
    name = " ".join(name.split())
    return _one(Company.objects.filter(name__iexact=name)) if name else None


def contact_by_name(name: str) -> Contact | None:
    """The one contact of that name (any case), or with that address; else none."""
    name = " ".join(name.split())
    if not name:
        return None
    if "@" in name:
        return _one(Contact.objects.filter(addresses__address=name.lower()))
    return _one(Contact.objects.filter(name__iexact=name))
