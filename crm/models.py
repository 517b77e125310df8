from django.db import models
from django.db.models.functions import Lower


class Company(models.Model):
    """Creatio's "account": an organisation the company works with."""

    name = models.CharField(max_length=255)
    # The company's web domain, lower case; emails from this domain belong to it.
    web_domain = models.CharField(max_length=253, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = [Lower("name")]
        verbose_name_plural = "companies"

    def __str__(self) -> str:
        return self.name


class Contact(models.Model):
    name = models.CharField(max_length=255, blank=True)
    company = models.ForeignKey(
        Company, null=True, blank=True, on_delete=models.SET_NULL, related_name="contacts"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = [Lower("name")]

    def __str__(self) -> str:
        primary = self.addresses.first()
        return self.name or (primary.address if primary else f"Contact {self.pk}")


class ContactAddress(models.Model):
    """One of a contact's email addresses; an address belongs to one contact."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="addresses")
    address = models.CharField(max_length=254, unique=True)

    class Meta:
        ordering = ["address"]
        verbose_name_plural = "contact addresses"

    def __str__(self) -> str:
        return self.address
