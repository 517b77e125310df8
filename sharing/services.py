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
    remove: bool = False
    new: bool = False
    error: str = ""


@transaction.atomic
def mailbox_sharing_update(
    *, account: EmailAccount, actor, shared: bool, rows: list[GrantRow]
) -> list[str]:
    """Save "Allow shared access" and the grants table. Only the rows posted change: a
    grant someone else added meanwhile stays. Every change is logged (who granted what
    to whom, what it was before). Returns the changes in words."""
    locked = EmailAccount.objects.select_for_update().get(pk=account.pk)
    said = []
    if locked.shared_access != shared:
        account_change_record(
            account=locked,
            actor=actor,
            field="shared_access",
            old="On" if locked.shared_access else "Off",
            new="On" if shared else "Off",
        )
        locked.shared_access = account.shared_access = shared
        locked.save(update_fields=["shared_access", "updated_at"])
        said.append(f"shared access {'on' if shared else 'off'}")
    existing = {grant.grantee_key: grant for grant in locked.grants.select_for_update()}
    changes = []
    for row in rows:
        grant = existing.get(row.key)
        before = grant.rights if grant else set()
        after = set() if row.remove else row.rights
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
