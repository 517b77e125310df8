import re

from django.conf import settings
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
    job_title = models.CharField(max_length=255, blank=True)
    phone = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = [Lower("name")]

    def __str__(self) -> str:
        if self.name:
            return self.name
        primary = self.addresses.first()
        return primary.address if primary else f"Contact {self.pk}"


class ContactAddress(models.Model):
    """One of a contact's email addresses; an address belongs to one contact."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="addresses")
    address = models.CharField(max_length=254, unique=True)

    class Meta:
        ordering = ["address"]
        verbose_name_plural = "contact addresses"

    def __str__(self) -> str:
        return self.address

    def save(self, *args, **kwargs) -> None:
        self.address = address_key(self.address)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        self.address = address_key(self.address)


def address_key(address: str) -> str:
    """An address as contacts keep it and emails store it: "Carl@X.test" typed in the
    admin matched none of Carl's emails, and would be a second row beside "carl@x.test"."""
    return address.strip().lower()


class ContactLink(models.Model):
    """A contact as it is in a mailbox's address book (an Exchange contact item): what
    an import updates instead of creating twice, and what an export created."""

    account = models.ForeignKey(
        "accounts.EmailAccount", on_delete=models.CASCADE, related_name="contact_links"
    )
    item_id = models.CharField(max_length=512)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="links")
    folder = models.CharField(max_length=1000, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "item_id"], name="contact_link_unique_item"),
            models.UniqueConstraint(
                fields=["account", "contact"], name="contact_link_unique_contact"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contact} in {self.account}"


class Activity(models.Model):
    """A meeting or a task from a mailbox's calendar or task list, shown on the
    timelines of the contacts and companies it involves."""

    class Kind(models.TextChoices):
        MEETING = "meeting", "Meeting"
        TASK = "task", "Task"

    account = models.ForeignKey(
        "accounts.EmailAccount", on_delete=models.CASCADE, related_name="activities"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # The Exchange item's id: a second import updates the row instead of adding one.
    external_id = models.CharField(max_length=512)
    subject = models.CharField(max_length=500, blank=True)
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    all_day = models.BooleanField(default=False)
    location = models.CharField(max_length=500, blank=True)
    organizer = models.CharField(max_length=254, blank=True)
    attendees = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=30, blank=True)
    due_on = models.DateField(null=True, blank=True)
    contacts = models.ManyToManyField(Contact, blank=True, related_name="activities")
    companies = models.ManyToManyField(Company, blank=True, related_name="activities")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-starts_at", "-pk"]
        verbose_name_plural = "activities"
        constraints = [
            models.UniqueConstraint(fields=["account", "external_id"], name="activity_unique_item")
        ]

    def __str__(self) -> str:
        return self.subject or self.get_kind_display()

    @property
    def when(self):
        return self.starts_at or self.due_on

    @property
    def status_label(self) -> str:
        """A task's status as a person says it: Exchange writes "NotStarted", Microsoft
        Graph "notStarted"; one neither names is spelled out word by word."""
        known = TASK_STATUSES.get(self.status.lower())
        if known:
            return known
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", self.status).capitalize()


TASK_STATUSES = {
    "notstarted": "Not started", "inprogress": "In progress", "completed": "Completed",
    "waitingonothers": "Waiting on others", "deferred": "Deferred",
}  # fmt: skip


class EmailLinkChange(models.Model):
    """An email linked to or unlinked from a contact or company by hand: who, what,
    when. Kept as text, so it outlives the email, the user and the contact it names."""

    class Action(models.TextChoices):
        LINKED = "linked", "linked"
        UNLINKED = "unlinked", "unlinked"

    class Kind(models.TextChoices):
        CONTACT = "contact", "Contact"
        COMPANY = "company", "Company"

    email = models.ForeignKey(
        "sync.Email", on_delete=models.SET_NULL, null=True, related_name="link_changes"
    )
    subject = models.CharField(max_length=300, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    action = models.CharField(max_length=10, choices=Action.choices)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    target_id = models.PositiveIntegerField()
    target = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.subject or '(no subject)'}: {self.action} {self.kind} {self.target}"
