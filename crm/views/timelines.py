"""The Contacts and Companies lists and a contact's or company's timeline (issue 17):
the CRM's pages' reads. What a user may see of the emails, meetings and tasks is decided
in sharing.selectors; these only arrange it, beside the contacts and companies, so this
module is above sync and sharing (pyproject.toml's layers contract), while
crm/selectors.py, the contacts' own reads, is below sync."""

from dataclasses import dataclass
from datetime import timedelta
from functools import cache, cached_property

from django.core.exceptions import EmptyResultSet
from django.core.paginator import Paginator
from django.db import connection, connections
from django.db.models import (
    CharField,
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Coalesce, Lower

from mailsetup.lookups import AnyOf

from ..models import Company, Contact, ContactAddress

PAGE_SIZE = 50
TIMELINE_PAGE = 30
# A search's matches are counted up to this many; past it a list says "more than", and
# its pages reach that many rows, as the Email page's search (issue 19: counting all of
# a broad search's matches cost what they are: 4,442 contacts of 20,000, 6-10 ms).
COUNTED = 1_000  # at least LatestFirst.FEW: a search past it takes no grouped shortcut


def _by_latest(rows, user, via: str, search: Q | None, matched=None, among=None):
    """`rows` sorted by their latest email the user may see (one pass over the emails,
    grouped: no query per row), undated and emailless last, then by name; with the count
    of the matching rows taken without the emails. Pages are read from the newest
    emails down (LatestFirst), which costs what a page holds, not what the mailboxes
    do (issue 19); the grouped query is what they fall back on. `matched`: the ids
    `search` matches, as a cheaper query than the rows filtered by it. `among(ids)`:
    the query of those of `ids` (a subquery) that match, for a search with more than
    COUNTED matches, which are then neither all read nor counted (the count is
    COUNTED + 1: "more than")."""
    from sharing.selectors import seen_on_timelines

    matching = rows.filter(search) if search is not None else rows
    latest = Max(f"{via}sent_at", filter=seen_on_timelines(user, via=via))
    listed = matching.annotate(latest_at=latest).order_by(
        F("latest_at").desc(nulls_last=True), Lower("name"), "pk"
    )
    if search is None:
        return LatestFirst(user, rows.model, listed), matching.order_by().count
    # The search's matches, read once for both the count and the page: each reading
    # is the search itself (four trigram lookups for contacts, 6-10 ms at 20,000).
    if matched is None:
        matched = matching.order_by().values_list("pk", flat=True)
    if among is not None:
        # The first COUNTED + 1 rows of the matches (a contact matched twice is two):
        # as many different ids, and the search is too broad to read or count whole.
        first = _id_list(matched, COUNTED + 1)
        if len(set(first)) > COUNTED:
            return LatestFirst(user, rows.model, listed, keep=among), lambda: COUNTED + 1
        if len(first) <= COUNTED:  # all of them
            ids = set(first)
            return LatestFirst(user, rows.model, listed, lambda: ids), lambda: len(ids)
    found = cache(lambda: _id_set(matched))
    return LatestFirst(user, rows.model, listed, found), lambda: len(found())


def _id_set(ids) -> set[int]:
    """The ids a one-column query reads, fetched as plain rows: a search matching 4,000
    contacts spent 4-5 ms a request in Django's row-by-row iteration of them (B6)."""
    return set(_id_list(ids))


def _id_list(ids, limit: int | None = None) -> list[int]:
    """`_id_set`'s rows as read, at most `limit` of them."""
    try:
        sql, params = ids.query.get_compiler(using=ids.db).as_sql()
    except EmptyResultSet:  # a filter that can match nothing, such as pk__in=[]
        return []
    if limit is not None:
        # Around the query as it is: a LIMIT after a UNION's last part would be its own.
        sql, params = f"SELECT * FROM ({sql}) AS matched LIMIT %s", (*params, limit)  # noqa: S608
    with connections[ids.db].cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


class LatestFirst:
    """The contacts (or companies) in the order of their latest email the user may see,
    sliced as a paginator does: the user's emails are read newest first, a batch at a
    time through the date index, until the page's rows are known (their latest email is
    the first one met). A row whose latest email is further down than STREAMED emails,
    or that has none, comes from the grouped query (`listed`) as before; so does a
    search matching fewer than FEW rows (grouping their emails costs little). `only`:
    the ids of the rows a search matches (a callable, read when needed); `keep`, for a
    search too broad to read them all: a callable that, given a subquery of the
    ids the emails meet, gives the query of those that match it (a part of each batch's
    one query, `_met`)."""

    BATCH = 2_000
    STREAMED = 20_000
    FEW = 200

    def __init__(self, user, model, listed, only=None, keep=None):
        self.user, self.model, self.listed, self.only = user, model, listed, only
        self.keep = keep
        self.latest: dict[int, tuple] = {}

    def count(self) -> int:
        return self.listed.count()

    @cached_property
    def visible(self):
        """The emails the user may see on timelines (sharing's rule, read once)."""
        from sharing.selectors import emails_for_timeline

        return emails_for_timeline(self.user)

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, part):
        if not isinstance(part, slice):
            return self[part : part + 1][0]
        start, stop = part.start or 0, part.stop
        if stop <= start:
            # An empty list's page (the paginator's [0:0]): no row to find, and the
            # walk below would look for the 0th from the end of none (a 500 on a CRM
            # with no contacts yet).
            return []
        order = self._stream(stop)
        if order is None:
            return list(self.listed[start:stop])
        ids = order[start:stop]
        rows = self.model.objects.filter(AnyOf(F("pk"), ids)).order_by()
        found = {row.pk: row for row in rows}
        rows = [found[pk] for pk in ids if pk in found]
        for row in rows:
            row.known_latest = self.latest[row.pk][1]
        if len(rows) < stop - start:
            # Past the rows with a dated email: the rest by name, as the grouped order.
            undated = self.listed.filter(latest_at__isnull=True).values("pk")
            rest = self.model.objects.filter(pk__in=undated).order_by(Lower("name"), "pk")
            skip = max(0, start - len(order))
            rows += list(rest[skip : skip + (stop - start) - len(rows)])
        return rows

    def _stream(self, stop: int) -> list[int] | None:
        """The ids of the first `stop` rows with a dated email, in order; those of all
        such rows if fewer; None if STREAMED emails did not settle them."""
        allowed = None
        if self.only is not None:
            allowed = self.only()
            if len(allowed) < self.FEW:
                return None
        emails = self.visible.filter(sent_at__isnull=False).order_by("-sent_at", "-pk")
        latest = self.latest
        cursor, walked = None, 0
        # A first page needs a few hundred emails: start small, grow up to BATCH. A
        # search keeps only some of the rows the emails meet: it starts four times
        # larger (B6's "bergstr", a fifth of the contacts: one batch instead of two).
        searched = allowed is not None or self.keep is not None
        size = min(self.BATCH, max(100, 2 * stop) * (4 if searched else 1))
        while walked < self.STREAMED:
            batch = emails
            if cursor is not None:
                batch = batch.filter(
                    Q(sent_at__lt=cursor[0]) | Q(sent_at=cursor[0], pk__lt=cursor[1]),
                    sent_at__lte=cursor[0],
                )
            met = self._met(batch.values_list("sent_at", "pk")[:size])
            for at, pk, row_id in met:
                if row_id is not None and (allowed is None or row_id in allowed):
                    latest.setdefault(row_id, (at, pk))
            read = len({pk for _at, pk, _row in met})
            walked += read
            if met:
                cursor = met[-1][:2]
            # Settled: `stop` rows found, and no later email can tie with the last one.
            if read < size or (
                len(latest) >= stop and cursor[0] < sorted(latest.values())[-stop][0]
            ):
                break
            size = min(self.BATCH, size * 4)
        else:
            return None
        # Only the rows up to the page's end matter (and those tied with its last one).
        if len(latest) >= stop:
            boundary = sorted(latest.values())[-stop][0]
            latest = {pk: found for pk, found in latest.items() if found[0] >= boundary}
        names = dict(
            self.model.objects.filter(AnyOf(F("pk"), list(latest))).values_list("pk", Lower("name"))
        )
        return sorted(latest, key=lambda pk: (-latest[pk][0].timestamp(), names.get(pk, ""), pk))

    def _met(self, batch) -> list[tuple]:
        """A batch of the emails (their dates and ids, newest first) with the rows each
        one links to, as (date, email id, row id) in the emails' order: an email
        linking to none, or only to rows a search (`keep`) does not match, is there with
        the row id None. One query: the emails, their links and, for a search, the
        test of the rows they meet were three (issue 19)."""
        from sync.models import Email

        link = "contacts" if self.model is Contact else "companies"
        through = getattr(Email, link).through._meta
        column = through.get_field("contact" if self.model is Contact else "company").column
        db = batch.db
        try:
            sql, params = batch.query.get_compiler(using=db).as_sql()
        except EmptyResultSet:
            return []
        q = connections[db].ops.quote_name
        met = (
            f"SELECT b.at, b.id, l.{q(column)} AS row_id FROM batch AS b LEFT JOIN "  # noqa: S608
            f"{q(through.db_table)} AS l ON l.{q(through.get_field('email').column)} = b.id"
        )
        kept = ""
        if self.keep is not None:
            # The rows met, tested once each: the search's lookups by id, which no
            # trigram index serves, over a few hundred rows instead of all of them. On
            # PostgreSQL through an array, whose size the planner does not guess: as a
            # plain subquery it hashed all 20,000 contacts to join them (B6: 4.3 ms
            # against 2.7).
            ids = "SELECT DISTINCT row_id FROM met"
            if connections[db].vendor == "postgresql":
                ids = f"SELECT unnest(ARRAY({ids}))"
            ids = RawSQL(ids, ())  # noqa: S611 (our own text, no input in it)
            kept_sql, kept_params = self.keep(ids).query.get_compiler(using=db).as_sql()
            kept = f", kept AS MATERIALIZED ({kept_sql})"
            params = (*params, *kept_params)
        pick = "CASE WHEN row_id IN (SELECT * FROM kept) THEN row_id END" if kept else "row_id"
        with connections[db].cursor() as cursor:
            cursor.execute(
                f"WITH batch(at, id) AS MATERIALIZED ({sql}), met AS MATERIALIZED ({met})"  # noqa: S608
                f"{kept} SELECT at, id, {pick} FROM met ORDER BY at DESC, id DESC",
                params,
            )
            rows = cursor.fetchall()
        # The dates as the ORM gives them: aware (SQLite's come naive through a plain cursor).
        date = Email._meta.get_field("sent_at").get_col(Email._meta.db_table)
        converters = connections[db].ops.get_db_converters(date)
        for convert in converters:
            rows = [(convert(at, date, connections[db]), pk, row) for at, pk, row in rows]
        return rows


def contacts_for_list(user, *, search: str = ""):
    """Every contact, those with the most recent email the user may see first (then by
    name); matching `search` in the name, an address, the job title or the company.
    Returns (queryset, its count)."""
    search = " ".join(search.split())
    if not search:
        return _by_latest(Contact.objects.all(), user, "emails__", None)
    matched = _contacts_matching(search)
    condition = Q(pk__in=matched)

    def among(ids) -> QuerySet:
        # The ids of the contacts among `ids` (a subquery of the contacts a page's
        # emails meet) that match: the four lookups ORed over the joins, tested on those
        # few hundred by their ids (through the indexes, the name's alone read all 2,301
        # "bergstr" contacts: 3 ms).
        return (
            Contact.objects.filter(pk__in=ids)
            .filter(
                Q(name__icontains=search)
                | Q(job_title__icontains=search)
                | Q(company__name__icontains=search)
                | Exists(
                    ContactAddress.objects.filter(contact=OuterRef("pk"), address__icontains=search)
                )
            )
            .order_by()
            .values("pk")
        )

    return _by_latest(Contact.objects.all(), user, "emails__", condition, matched, among)


def _contacts_matching(search: str):
    """The ids of the contacts whose name, job title, address or company matches: four
    lookups, each of which its own trigram index can serve (crm 0004, 0005), as one
    UNION ALL (a contact found twice is one id to a set; a UNION's sorting out, and a
    join of all contacts to its result, took another 5 ms of 15 at 20,000 contacts).
    The same four ORed over the joins could use no index at any size (issue 19)."""
    return (
        Contact.objects.filter(name__icontains=search)
        .order_by()
        .values_list("pk", flat=True)
        .union(
            Contact.objects.filter(job_title__icontains=search).order_by().values_list("pk"),
            Contact.objects.filter(company__in=Company.objects.filter(name__icontains=search))
            .order_by()
            .values_list("pk"),
            ContactAddress.objects.filter(address__icontains=search)
            .order_by()
            .values_list("contact"),
            all=True,
        )
        .order_by()
    )


def companies_for_list(user, *, search: str = ""):
    """Every company, as contacts_for_list; matching `search` in its name or web domain."""
    search = " ".join(search.split())
    condition = None
    if search:
        condition = Q(name__icontains=search) | Q(web_domain__icontains=search)
    return _by_latest(Company.objects.all(), user, "emails__", condition)


class ListPaginator(Paginator):
    """Pages of a list whose count comes from a cheaper query than the list's own; those
    of a search (`bounded`) reach its first COUNTED rows, and say "more than" past them."""

    def __init__(self, rows, per_page, *, count, bounded: bool = False):
        super().__init__(rows, per_page)
        self._count, self.bounded = count, bounded

    @cached_property
    def found(self) -> int:
        return self._count()

    @cached_property
    def count(self) -> int:
        return min(self.found, COUNTED) if self.bounded else self.found

    @property
    def more(self) -> bool:
        return self.bounded and self.found > COUNTED


def page_details(user, page, model) -> None:
    """For a page of listed contacts or companies: each one's latest email the user may
    see (`latest_email`), its addresses or its number of contacts; a few queries."""
    from sharing.selectors import emails_for_timeline
    from sync.models import Email

    ids = [row.pk for row in page]
    link = "contacts" if model is Contact else "companies"
    # LatestFirst knows the latest email of the rows it met on the way (`known_latest`);
    # the others (no dated email, or a grouped page) are looked up here.
    unknown = [row.pk for row in page if not hasattr(row, "known_latest")]
    looked_up = {}
    if unknown:
        # The rule the list's stream built for this user, if it did: read once.
        listed = page.paginator.object_list
        mine = isinstance(listed, LatestFirst) and listed.user is user
        latest = (
            (listed.visible if mine else emails_for_timeline(user))
            .filter(**{link: OuterRef("pk")})
            .order_by(F("sent_at").desc(nulls_last=True), "-pk")
            .values("pk")[:1]
        )
        looked_up = dict(
            model.objects.filter(AnyOf(F("pk"), unknown))
            .annotate(latest_id=Subquery(latest))
            .values_list("pk", "latest_id")
        )
    latest_ids = {row.pk: getattr(row, "known_latest", None) for row in page} | looked_up
    if model is Contact:
        companies = Company.objects.filter(AnyOf(F("pk"), [row.company_id for row in page]))
        companies = companies.order_by()
        companies = {company.pk: company for company in companies}
        for row in page:
            row.company = companies.get(row.company_id)
    if model is Company:
        people = dict(
            Contact.objects.filter(AnyOf(F("company"), ids))
            .order_by()
            .values("company")
            .annotate(n=Count("pk"))
            .values_list("company", "n")
        )
        found = {pk: (latest_ids[pk], people.get(pk, 0)) for pk in ids}
    else:
        found = {pk: (latest_ids[pk], None) for pk in ids}
    emails = Email.objects.filter(AnyOf(F("pk"), [f[0] for f in found.values() if f[0]]))
    emails = {email.pk: email for email in emails.only("pk", "subject", "sent_at")}
    addresses: dict[int, list[str]] = {}
    if model is Contact:
        rows = ContactAddress.objects.filter(AnyOf(F("contact"), ids)).order_by("address")
        for contact_id, address in rows.values_list("contact_id", "address"):
            addresses.setdefault(contact_id, []).append(address)
    for row in page:
        latest_id, count = found.get(row.pk, (None, None))
        row.latest_email = emails.get(latest_id)
        row.contact_count = count
        row.address_list = addresses.get(row.pk, [])
        if model is Contact:
            # As str(contact) reads, without a query per row.
            row.label = row.name or next(iter(row.address_list), f"Contact {row.pk}")


@dataclass
class Entry:
    """One line of a timeline: an email, a meeting or a task."""

    kind: str  # "email" or "activity"
    when: object
    item: object


def timeline(user, *, contact=None, company=None, after: str = "", search: str = ""):
    """A contact's or company's emails, meetings and tasks that the user may see, newest
    first (undated last), one page after `after` (a cursor; keyset, issue 19: nothing
    is counted and a later page costs what the first does), those matching `search`
    if given: a KeysetPage of Entry rows."""
    from mailsetup.keyset import Cursor
    from sharing.selectors import mailboxes_on_timelines

    cursor = Cursor.parse(after)
    if cursor is not None and cursor.kind not in ("email", "activity"):
        cursor = None
    from sync.search import searched

    search = " ".join(search.split())
    if search and not searched(search):
        return _entries([], cursor)  # only "or": no word to look for, as on the Email page
    # The mailboxes' languages a search asks for, read once for both passes.
    mailboxes = mailboxes_on_timelines(user) if search else []
    found = _timeline_rows(user, contact, company, cursor, search, mailboxes, dated=True)
    if len(found) <= TIMELINE_PAGE:
        found += _timeline_rows(user, contact, company, cursor, search, mailboxes, dated=False)
    return _entries(found, cursor)


def _timeline_rows(user, contact, company, cursor, search, mailboxes, *, dated: bool) -> list:
    """(kind, id, when) rows after the cursor: those with a date, or the undated ones;
    `mailboxes` those whose languages a search reads (mailboxes_on_timelines)."""
    from sharing.selectors import activities_for_timeline

    if cursor is not None and dated and cursor.at is None:
        return []  # the cursor is among the undated rows already
    if dated and _by_link_dates(contact, company):
        emails = _dated_links(user, contact, company, search, mailboxes)
    else:
        emails = _emails(user, contact, company, search, mailboxes, dated=dated)
    activities = (
        activities_for_timeline(user, contact=contact, company=company)
        .order_by()
        .annotate(
            entry=Value("activity", output_field=CharField()),
            at=Coalesce("starts_at", Cast("due_on", DateTimeField())),
            item=F("pk"),
        )
        .filter(at__isnull=not dated)
    )
    if search:
        from sync.search import searched, words_in

        # Word by word, as the emails beside them are searched.
        activities = activities.filter(words_in("subject", searched(search)))
    # A cursor among the dated rows keeps every undated one.
    if cursor is not None and (dated or cursor.at is None):
        emails = emails.filter(_after(cursor, "email", dated))
        activities = activities.filter(_after(cursor, "activity", dated))
    need = TIMELINE_PAGE + 1
    order = [*(["-at"] if dated else []), "-item"]
    emails = emails.values_list("entry", "item", "at")
    activities = activities.values_list("entry", "item", "at")
    if connection.features.supports_slicing_ordering_in_compound:
        # Each side's own page first (PostgreSQL): the emails' side can then stop after
        # a page instead of sorting all of a contact's emails.
        emails = emails.order_by(*order)[:need]
        activities = activities.order_by(*order)[:need]
    rows = emails.union(activities, all=True)
    return list(rows.order_by(*(["-at"] if dated else []), "-entry", "-item")[:need])


def _by_link_dates(contact, company) -> bool:
    """Whether the dated emails come from their links' dates (sync 0023, PostgreSQL)."""
    from sync.search import postgres

    return postgres() and (contact is None) != (company is None)


def _dated_links(user, contact, company, search, mailboxes):
    """The timeline's dated emails as their links to the contact (or company), newest
    first from the links' (contact, date, email) index (sync 0023), each kept if the
    user may see its email there and it matches the search: a page stops once it has a
    page of matches, where gathering all of a contact's matches and sorting them cost
    23-37 ms for 6,000 emails and a common word, and walking every email by date
    360 ms for a word common in other people's mailboxes only (issue 19). A word with
    fewer matches than a page is looked up in the search indexes or walks the contact's
    links, as the planner finds cheaper."""
    from sharing.selectors import emails_for_timeline
    from sync.models import Email
    from sync.search import matching

    seen = emails_for_timeline(user).order_by()
    if search:
        seen = matching(seen, search, mailboxes)
    if contact is not None:
        links = Email.contacts.through.objects.filter(contact=contact)
    else:
        links = Email.companies.through.objects.filter(company=company)
    # The link's copy of its email's date: a column of the database's only (sync 0023;
    # the many-to-many fields' tables are Django's own), named through the link table as
    # this query's own base table: the query is not for use as a subquery.
    column = f"{connection.ops.quote_name(links.model._meta.db_table)}.sent_at"
    return (
        links.annotate(
            entry=Value("email", output_field=CharField()),
            at=RawSQL(column, [], output_field=DateTimeField()),  # noqa: S611 - our column
            item=F("email_id"),
        )
        .filter(at__isnull=False)
        .filter(Exists(seen.filter(pk=OuterRef("email_id"))))
    )


def _emails(user, contact, company, search, mailboxes, *, dated: bool):
    """The timeline's emails, dated or undated, from the emails themselves (SQLite, and
    the undated ones)."""
    from sharing.selectors import emails_for_timeline
    from sync.search import matching

    emails = emails_for_timeline(user, contact=contact, company=company)
    at = F("sent_at")
    if search:
        emails = matching(emails, search, mailboxes)
        # Not in the date index's order: the planner then gathers the matches from the
        # contact's (or company's) links or from the search indexes, whichever is fewer,
        # and sorts those, instead of walking every email by date until a page of
        # matches turns up (360 ms for a word common in other people's mailboxes only).
        at = ExpressionWrapper(at + Value(timedelta(0)), output_field=DateTimeField())
    return (
        emails.order_by()
        .filter(sent_at__isnull=not dated)
        .annotate(entry=Value("email", output_field=CharField()), at=at, item=F("pk"))
    )


def _after(cursor, kind: str, dated: bool) -> Q:
    """Rows of one kind after the cursor in the timeline's order: date (newest first,
    undated last), then emails before meetings and tasks, then id."""
    if kind == cursor.kind:
        tie = Q(item__lt=cursor.pk)
    else:
        # "email" sorts before "activity" at one date: all or none of this kind follow.
        tie = Q() if kind == "activity" else Q(pk__in=[])
    if not dated:
        return tie
    return Q(at__lte=cursor.at) & (Q(at__lt=cursor.at) | Q(at=cursor.at) & tie)


def _entries(rows, cursor):
    """The page's rows as Entry objects, with two queries (its emails, its activities)."""
    from mailsetup.keyset import Cursor, KeysetPage
    from sync.models import Email

    from ..models import Activity

    page = KeysetPage([], first=cursor is None)
    if len(rows) > TIMELINE_PAGE:
        kind, pk, when = rows[TIMELINE_PAGE - 1]
        page.next_cursor = str(Cursor(when, pk, kind))
    rows = rows[:TIMELINE_PAGE]
    email_ids = [pk for kind, pk, _when in rows if kind == "email"]
    activity_ids = [pk for kind, pk, _when in rows if kind == "activity"]
    emails = Email.objects.filter(AnyOf(F("pk"), email_ids)).select_related("account")
    emails = {e.pk: e for e in emails.defer("text_body", "html_body", "references", "search")}
    activities = Activity.objects.filter(pk__in=activity_ids) if activity_ids else []
    activities = {a.pk: a for a in activities}
    page.rows = [
        Entry(kind, when, (emails if kind == "email" else activities)[pk])
        for kind, pk, when in rows
        if pk in (emails if kind == "email" else activities)
    ]
    return page
