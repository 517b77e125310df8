from dataclasses import dataclass, field

from django.db import transaction

from accounts.models import EmailAccount
from accounts.services import account_change_record

from .models import RIGHT_FIELDS, GrantChange, MailboxGrant, rights_label


@dataclass
class GrantRow:
    """One row of the grants table as the user left it: a user or a role, the rights
    ticked, and whether it is to be removed."""

    key: str  # "user-<pk>" or "group-<pk>"
    label: str
    user: object = None
    group: object = None
    rights: set[str] = field(default_factory=set)
    # The rights the row had when the page was shown; None for a row added since.
    shown: set[str] | None = None
    remove: bool = False
    error: str = ""

    @property
    def new(self) -> bool:
        return self.shown is None

    @property
    def shown_value(self) -> str:
        return ",".join(sorted(self.shown or ()))

    @property
    def wanted(self) -> set[str]:
        return set() if self.remove else self.rights

    @property
    def touched(self) -> bool:
        return self.new or self.wanted != self.shown


class GrantConflict(Exception):
    """Rows someone else changed since the page was shown: key -> rights now."""

    def __init__(self, now: dict[str, set[str]]):
        super().__init__(", ".join(now))
        self.now = now


@transaction.atomic
def mailbox_sharing_update(
    *, account: EmailAccount, actor, shared: bool, rows: list[GrantRow], shared_shown=None
) -> list[str]:
    """Save "Allow shared access" and the grants table. Only what this user changed is
    written: a row left as it was shown stays as it is in the database, even if someone
    else changed it meanwhile; a row the user changed that someone else also changed
    raises GrantConflict and nothing is saved. Every change is logged (who granted what
    to whom, what it was before). Returns the changes in words."""
    locked = EmailAccount.objects.select_for_update().get(pk=account.pk)
    existing = {grant.grantee_key: grant for grant in locked.grants.select_for_update()}
    now = {key: grant.rights for key, grant in existing.items()}
    touched = [row for row in rows if row.touched]
    conflicts = {
        row.key: now.get(row.key, set())
        for row in touched
        if now.get(row.key, set()) not in (row.shown or set(), row.wanted)
    }
    if conflicts:
        raise GrantConflict(conflicts)
    said = []
    if locked.shared_access != shared and shared_shown != shared:
        account_change_record(
            account=locked, actor=actor, field="shared_access",
            old="On" if locked.shared_access else "Off", new="On" if shared else "Off",
        )  # fmt: skip
        locked.shared_access = account.shared_access = shared
        locked.save(update_fields=["shared_access", "updated_at"])
        said.append(f"shared access {'on' if shared else 'off'}")
    changes = []
    for row in touched:
        grant = existing.get(row.key)
        before, after = now.get(row.key, set()), row.wanted
        if before == after:
            continue
        if not after:
            grant.delete()
        else:
            grant = grant or MailboxGrant(account=locked, user=row.user, group=row.group)
            for right, name in RIGHT_FIELDS.items():
                setattr(grant, name, right in after)
            grant.save()
        changes.append(
            GrantChange(
                account=locked,
                address=locked.address,
                actor=actor,
                grantee=row.label,
                before=rights_label(before),
                after=rights_label(after),
            )
        )
        said.append(f"{row.label}: {rights_label(after)}")
    GrantChange.objects.bulk_create(changes)
    return said


@transaction.atomic
def removed_mailbox_grants_revoke(*, account: EmailAccount, actor) -> list[str]:
    """Revoke every grant a removed mailbox still has (its owner's decision); each one
    logged like any grant change. Returns the grantees, in words."""
    locked = EmailAccount.objects.select_for_update().get(pk=account.pk)
    grants = list(locked.grants.select_for_update(of=("self",)).select_related("user", "group"))
    GrantChange.objects.bulk_create(
        [
            GrantChange(
                account=locked,
                address=locked.address,
                actor=actor,
                grantee=grant.grantee_label,
                before=grant.rights_label,
                after=rights_label(set()),
            )
            for grant in grants
        ]
    )
    MailboxGrant.objects.filter(pk__in=[grant.pk for grant in grants]).delete()
    return [grant.grantee_label for grant in grants]
