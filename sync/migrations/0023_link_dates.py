"""Each link of an email to a contact or company carries the email's date, kept by
triggers, and is indexed by (contact or company, date, email): a timeline's page is then
read newest first from that index and stops once it has a page, with or without a
search, instead of gathering all of a contact's emails and sorting them (issue 19: 23-37 ms for
a contact with 6,000 emails and a common word, 60-80 ms for a word common elsewhere;
0.5 and 3.6 ms so). PostgreSQL only: SQLite keeps the emails' own order. It takes the
emails and their links at once (`_lock`) and holds them while it fills the dates."""

import time

from django.db import OperationalError, migrations, transaction

TABLES = {"sync_email_contacts": "contact_id", "sync_email_companies": "company_id"}
# How long the migration waits for the tables to be free, at most: 600 tries 0.1 s apart.
LOCK_TRIES, LOCK_PAUSE = 600, 0.1

FORWARDS = [
    # FOR SHARE: an email whose date another transaction is changing is waited for, and
    # one whose date changes after this read waits for this link to be committed, so
    # that its trigger below sees the link (and each sees the other's date).
    """
    CREATE FUNCTION sync_link_sent_at() RETURNS trigger AS $$
    BEGIN
        NEW.sent_at := (SELECT sent_at FROM sync_email WHERE id = NEW.email_id FOR SHARE);
        RETURN NEW;
    END $$ LANGUAGE plpgsql
    """,
    """
    CREATE FUNCTION sync_email_sent_at_to_links() RETURNS trigger AS $$
    BEGIN
        UPDATE sync_email_contacts SET sent_at = NEW.sent_at WHERE email_id = NEW.id;
        UPDATE sync_email_companies SET sent_at = NEW.sent_at WHERE email_id = NEW.id;
        RETURN NULL;
    END $$ LANGUAGE plpgsql
    """,
    # A link written before its email (the foreign keys are checked at commit), or to
    # an email without a date: read again at commit, for those links only.
    """
    CREATE FUNCTION sync_link_sent_at_at_commit() RETURNS trigger AS $$
    BEGIN
        EXECUTE format(
            'UPDATE %I AS link SET sent_at = email.sent_at FROM sync_email AS email'
            ' WHERE link.id = $1 AND email.id = link.email_id'
            ' AND link.sent_at IS DISTINCT FROM email.sent_at', TG_TABLE_NAME
        ) USING NEW.id;
        RETURN NULL;
    END $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER sync_email_sent_at_to_links AFTER UPDATE OF sent_at ON sync_email"
    " FOR EACH ROW WHEN (OLD.sent_at IS DISTINCT FROM NEW.sent_at)"
    " EXECUTE FUNCTION sync_email_sent_at_to_links()",
    *[
        statement
        for table, column in TABLES.items()
        for statement in (
            f"ALTER TABLE {table} ADD COLUMN sent_at timestamp with time zone NULL",
            f"UPDATE {table} AS link SET sent_at = email.sent_at FROM sync_email AS email"  # noqa: S608 - our table names
            " WHERE email.id = link.email_id",
            f"CREATE INDEX {table}_by_date ON {table} ({column}, sent_at DESC, email_id DESC)",
            f"CREATE TRIGGER {table}_sent_at BEFORE INSERT OR UPDATE OF email_id ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION sync_link_sent_at()",
            f"CREATE CONSTRAINT TRIGGER {table}_sent_at_at_commit AFTER INSERT ON {table}"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.sent_at IS NULL)"
            " EXECUTE FUNCTION sync_link_sent_at_at_commit()",
        )
    ],
]

BACKWARDS = [
    "DROP TRIGGER IF EXISTS sync_emails_to_waiting_links ON sync_email",  # an early 0023
    "DROP TRIGGER IF EXISTS sync_email_sent_at_to_links ON sync_email",
    *[
        statement
        for table in TABLES
        for statement in (
            f"DROP TRIGGER IF EXISTS {table}_sent_at_at_commit ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_sent_at ON {table}",
            f"DROP INDEX IF EXISTS {table}_by_date",
            f"ALTER TABLE {table} DROP COLUMN IF EXISTS sent_at",
        )
    ],
    "DROP FUNCTION IF EXISTS sync_emails_to_waiting_links()",
    "DROP FUNCTION IF EXISTS sync_link_sent_at_at_commit()",
    "DROP FUNCTION IF EXISTS sync_email_sent_at_to_links()",
    "DROP FUNCTION IF EXISTS sync_link_sent_at()",
]


def _lock(schema_editor) -> None:
    """The three tables at once, or none: the store writes an email, then its links; a
    mailbox's removal deletes the links, then the emails. Waiting for one table while
    holding another would deadlock with one of them, so a table that is busy releases
    the others and all are asked for again a moment later."""
    for _ in range(LOCK_TRIES):
        try:
            with transaction.atomic(using=schema_editor.connection.alias):
                schema_editor.execute("LOCK TABLE sync_email IN SHARE ROW EXCLUSIVE MODE NOWAIT")
                schema_editor.execute(
                    "LOCK TABLE sync_email_contacts, sync_email_companies"
                    " IN ACCESS EXCLUSIVE MODE NOWAIT"
                )
            return
        except OperationalError:
            time.sleep(LOCK_PAUSE)
    raise RuntimeError(
        "sync 0023: the emails and their links stayed busy for a minute; stop the "
        "workers (no sync or mailbox removal running) and run migrate again"
    )


def _run(statements, *, lock: bool):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        if lock:
            _lock(schema_editor)
        for statement in statements:
            schema_editor.execute(statement, params=None)  # as written: format()'s %I

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0005_job_title_trigram_index"),
        ("sync", "0022_mailbox_not_before"),
    ]

    operations = [migrations.RunPython(_run(FORWARDS, lock=True), _run(BACKWARDS, lock=True))]
