import re

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from .models import Right, grantee_label
from .services import GrantRow

KEY = re.compile(r"^(user|group)-([1-9][0-9]{0,17})$")


def _label(grantee) -> str:
    return f"{grantee.name} (role)" if isinstance(grantee, Group) else grantee_label(grantee)


class GrantsForm:
    """The "Shared access" section as posted: the switch, and the grants table whose
    rows are keyed "user-<pk>" or "group-<pk>", each with the rights ticked. A row
    added with the picker or left with no right is shown again as the user left it."""

    def __init__(self, data=None, *, account, grants):
        self.account = account
        self.errors: list[str] = []
        saved = {grant.grantee_key: grant for grant in grants}
        if data is None:
            self.shared = account.shared_access
            self.rows = [
                GrantRow(
                    key=key,
                    label=grant.grantee_label,
                    user=grant.user,
                    group=grant.group,
                    rights=grant.rights,
                )
                for key, grant in saved.items()
            ]
            return
        self.shared = data.get("shared_access") == "on"
        keys = list(dict.fromkeys(key for key in data.getlist("row") if KEY.match(key)))
        added = data.get("add", "")
        if KEY.match(added) and added not in keys:
            keys.append(added)
        grantees = self._grantees(keys)
        ticked = {right: set(data.getlist(right.value)) for right in Right}
        removed = set(data.getlist("remove"))
        self.rows = []
        for key in keys:
            grantee = grantees.get(key)
            if grantee is None:
                self.errors.append("A user or role in the table no longer exists; it was left out.")
                continue
            if key == f"user-{account.owner_id}":
                self.errors.append(
                    f"{_label(grantee)} owns this mailbox and has every right already."
                )
                continue
            rights = {right.value for right in Right if key in ticked[right]}
            if key == added and key not in data.getlist("row"):
                rights = {Right.ACCESS.value}
            self.rows.append(
                GrantRow(
                    key=key,
                    label=_label(grantee),
                    rights=rights,
                    remove=key in removed,
                    new=key not in saved,
                    user=grantee if key.startswith("user") else None,
                    group=grantee if key.startswith("group") else None,
                )
            )

    @staticmethod
    def _grantees(keys: list[str]) -> dict:
        ids = {"user": [], "group": []}
        for key in keys:
            kind, pk = key.split("-")
            ids[kind].append(int(pk))
        found = {}
        if ids["user"]:
            for user in get_user_model().objects.filter(pk__in=ids["user"]):
                found[f"user-{user.pk}"] = user
        if ids["group"]:
            for group in Group.objects.filter(pk__in=ids["group"]):
                found[f"group-{group.pk}"] = group
        return found

    @property
    def keys(self) -> list[str]:
        return [row.key for row in self.rows]

    def is_valid(self) -> bool:
        for row in self.rows:
            row.error = ""
            if not row.remove and not row.rights:
                row.error = (
                    f"{row.label}: tick Access emails, Send emails or Setup mailbox, "
                    "or tick Remove."
                )
                self.errors.append(row.error)
        return not self.errors
