import re

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from .models import Right, grantee_label
from .services import GrantRow

KEY = re.compile(r"(user|group)-([1-9][0-9]{0,17})")


def _label(grantee) -> str:
    return f"{grantee.name} (role)" if isinstance(grantee, Group) else grantee_label(grantee)


def _rights(value: str) -> set[str]:
    return {right.value for right in Right if right.value in value.split(",")}


class GrantsForm:
    """The "Shared access" section as posted: the switch, and the grants table whose
    rows are keyed "user-<pk>" or "group-<pk>", each with the rights ticked and the
    rights it had when the page was shown (so a save changes only what this user
    changed). A row added with the picker or left with no right is shown again as the
    user left it."""

    def __init__(self, data=None, *, account, grants):
        self.account = account
        self.errors: list[str] = []
        if data is None:
            self.shared = self.shared_shown = account.shared_access
            self.rows = [
                GrantRow(
                    key=grant.grantee_key,
                    label=grant.grantee_label,
                    user=grant.user,
                    group=grant.group,
                    rights=grant.rights,
                    shown=grant.rights,
                )
                for grant in grants
            ]
            return
        self.shared = data.get("shared_access") == "on"
        self.shared_shown = data.get("shared_shown") == "on"
        posted = list(dict.fromkeys(key for key in data.getlist("row") if KEY.fullmatch(key)))
        added = data.get("add", "")
        keys = [*posted, added] if KEY.fullmatch(added) and added not in posted else posted
        grantees = self._grantees(keys)
        ticked = {right: set(data.getlist(right.value)) for right in Right}
        removed = set(data.getlist("remove"))
        self.rows = []
        for key in keys:
            grantee = grantees.get(key)
            shown = data.get(f"shown-{key}")
            if grantee is None:
                self.errors.append("A user or role in the table no longer exists; it was left out.")
                continue
            if key == f"user-{account.owner_id}":
                self.errors.append(
                    f"{_label(grantee)} owns this mailbox and has every right already."
                )
                continue
            if shown is None and not getattr(grantee, "is_active", True):
                self.errors.append(f"{_label(grantee)} is not an active user; it was left out.")
                continue
            rights = {right.value for right in Right if key in ticked[right]}
            if key not in posted:
                rights = {Right.ACCESS.value}
            self.rows.append(
                GrantRow(
                    key=key,
                    label=_label(grantee),
                    rights=rights,
                    shown=None if shown is None else _rights(shown),
                    remove=key in removed,
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

    def conflicted(self, conflict) -> None:
        """Someone else changed these rows meanwhile: show them as they are now, keep
        the rest as the user left it, and say so."""
        for row in self.rows:
            if row.key in conflict.now:
                row.rights = row.shown = conflict.now[row.key]
                row.remove = False
                row.error = (
                    f"{row.label}: changed by someone else while you were editing; "
                    "this is how it is now. Make your change again and save."
                )
                self.errors.append(row.error)
