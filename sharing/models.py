from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models

from accounts.models import EmailAccount


class Right(models.TextChoices):
    """What a grant lets its holder do with a shared mailbox; the owner has all three."""

    ACCESS = "access", "Access emails"
    SEND = "send", "Send emails"
    SETUP = "setup", "Setup mailbox"


# The grant's boolean field for each right.
RIGHT_FIELDS = {Right.ACCESS: "can_access", Right.SEND: "can_send", Right.SETUP: "can_setup"}

# The two system operations, assignable to users and roles in the admin.
SHARE_SETUP = "sharing.setup_shared_access"
SYNC_SETUP = "sharing.setup_shared_sync"


class MailboxGrant(models.Model):
    """Rights on a mailbox given to one user or to one role (a Django group). Counted
    only while the mailbox allows shared access."""

    account = models.ForeignKey(EmailAccount, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="mailbox_grants",
    )
    group = models.ForeignKey(
        Group, on_delete=models.CASCADE, null=True, blank=True, related_name="mailbox_grants"
    )
    can_access = models.BooleanField("access emails", default=False)
    can_send = models.BooleanField("send emails", default=False)
    can_setup = models.BooleanField("setup mailbox", default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True)
                | models.Q(user__isnull=True, group__isnull=False),
                name="grant_to_a_user_or_a_role",
            ),
            models.UniqueConstraint(
                fields=["account", "user"],
                condition=models.Q(user__isnull=False),
                name="grant_one_per_user",
            ),
            models.UniqueConstraint(
                fields=["account", "group"],
                condition=models.Q(group__isnull=False),
                name="grant_one_per_role",
            ),
        ]
        permissions = [
            ("setup_shared_access", "Access to shared account setup"),
            ("setup_shared_sync", "Shared mailbox synchronization setup"),
        ]

    def __str__(self) -> str:
        return f"{self.grantee_label}: {self.rights_label} on {self.account}"

    @property
    def grantee_key(self) -> str:
        return f"user-{self.user_id}" if self.user_id else f"group-{self.group_id}"

    @property
    def grantee_label(self) -> str:
        return grantee_label(self.user) if self.user_id else f"{self.group.name} (role)"

    @property
    def rights(self) -> set[str]:
        return {right for right, field in RIGHT_FIELDS.items() if getattr(self, field)}

    @property
    def rights_label(self) -> str:
        return rights_label(self.rights)


def grantee_label(user) -> str:
    name = user.get_full_name()
    return f"{name} ({user.username})" if name else user.username


def rights_label(rights: set[str]) -> str:
    return ", ".join(right.label for right in Right if right in rights) or "none"


class GrantChange(models.Model):
    """One change to who shares a mailbox: who granted what to whom, when, and what it
    was before. Kept as text, so it outlives the users, roles and mailboxes it names."""

    account = models.ForeignKey(
        EmailAccount, on_delete=models.SET_NULL, null=True, related_name="grant_changes"
    )
    address = models.CharField(max_length=254)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    grantee = models.CharField(max_length=300)
    before = models.CharField(max_length=100)
    after = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.address}: {self.grantee} {self.before} -> {self.after}"
