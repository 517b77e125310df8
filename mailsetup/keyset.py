"""Keyset pages of dated rows (issue 19): newest first, undated last, ties by id.

A page starts after the last row of the one before (`?after=<cursor>`), or ends before
the first row of the one after (`?before=<cursor>`, the "Newer" link), so page 50 costs
what page 1 does, where an OFFSET read and threw away every row before it; and nothing
is counted, so a page's cost does not grow with the rows there are. Rows with a date
come first, by (date, id) descending, read through an index on them; the undated ones
follow, by id descending.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q, QuerySet


@dataclass
class Cursor:
    at: datetime | None
    pk: int
    kind: str = ""

    def __str__(self) -> str:
        at = self.at.isoformat() if self.at is not None else ""
        return "~".join([at, str(self.pk), self.kind]) if self.kind else f"{at}~{self.pk}"

    @classmethod
    def parse(cls, value: str | None) -> "Cursor | None":
        """A cursor from a URL; None (the first page) for anything malformed."""
        parts = (value or "").split("~")
        if len(parts) not in (2, 3) or not parts[1].isdigit():
            return None
        try:
            at = datetime.fromisoformat(parts[0]) if parts[0] else None
        except ValueError:
            return None
        if at is not None and at.tzinfo is None:
            return None
        return cls(at, int(parts[1]), parts[2] if len(parts) == 3 else "")


@dataclass
class KeysetPage:
    rows: list
    next_cursor: str = ""  # empty on the last page
    first: bool = True
    prev_cursor: str = ""  # empty on the first page
    extra: dict = field(default_factory=dict)

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __bool__(self) -> bool:
        return bool(self.rows)

    @property
    def has_next(self) -> bool:
        return bool(self.next_cursor)

    @property
    def has_previous(self) -> bool:
        return bool(self.prev_cursor)


def after(cursor: Cursor, date: str = "sent_at") -> Q:
    """Rows with a date that come after the cursor's row (which has one)."""
    # The redundant `<=` is what lets the planner start the index scan at the cursor.
    return Q(**{f"{date}__lte": cursor.at}) & (
        Q(**{f"{date}__lt": cursor.at}) | Q(**{date: cursor.at, "pk__lt": cursor.pk})
    )


def dated_page(rows: QuerySet, cursor: Cursor | None, size: int, date: str = "sent_at"):
    """One page of `rows` after `cursor` (None: the first page)."""
    found: list = []
    if cursor is None or cursor.at is not None:
        dated = rows.filter(**{f"{date}__isnull": False})
        if cursor is not None:
            dated = dated.filter(after(cursor, date))
        found = list(dated.order_by(f"-{date}", "-pk")[: size + 1])
    if len(found) <= size:
        undated = rows.filter(**{f"{date}__isnull": True})
        if cursor is not None and cursor.at is None:
            undated = undated.filter(pk__lt=cursor.pk)
        found += list(undated.order_by("-pk")[: size + 1 - len(found)])
    page = KeysetPage(found[:size], first=cursor is None)
    if len(found) > size:
        page.next_cursor = _cursor_of(found[size - 1], date)
    if cursor is not None and page.rows:
        page.prev_cursor = _cursor_of(page.rows[0], date)
    return page


def _cursor_of(row, date: str) -> str:
    return str(Cursor(getattr(row, date), row.pk))


def dated_page_before(rows: QuerySet, cursor: Cursor, size: int, date: str = "sent_at"):
    """The page of `rows` that ends just before `cursor`'s row (the "Newer" link): the
    `size` rows closest before it, read in the other direction through the same index,
    shown in the page's order. Fewer than a page before it: the first page."""
    found: list = []
    if cursor.at is None:
        # Before an undated row: the undated ones with a higher id, then every dated one.
        undated = rows.filter(**{f"{date}__isnull": True, "pk__gt": cursor.pk})
        found = list(undated.order_by("pk")[: size + 1])
    if len(found) <= size:
        dated = rows.filter(**{f"{date}__isnull": False})
        if cursor.at is not None:
            dated = dated.filter(
                Q(**{f"{date}__gte": cursor.at})
                & (Q(**{f"{date}__gt": cursor.at}) | Q(**{date: cursor.at, "pk__gt": cursor.pk}))
            )
        found += list(dated.order_by(date, "pk")[: size + 1 - len(found)])
    if len(found) <= size:
        return dated_page(rows, None, size, date)
    page = KeysetPage(found[:size][::-1], first=False)
    page.prev_cursor = _cursor_of(page.rows[0], date)
    page.next_cursor = _cursor_of(page.rows[-1], date)
    return page


def bounded_count(rows: QuerySet, bound: int) -> int:
    """How many rows there are, counting at most bound + 1 of them (more than `bound`
    reads as bound + 1): an index range of that length at most, however many rows."""
    return rows.order_by()[: bound + 1].count()
