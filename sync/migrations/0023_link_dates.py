"""Each link of an email to a contact or company carries the email's date, kept by
triggers, and is indexed by (contact or company, date, email): a timeline's page is then
read newest first from that index and stops once it has a page, with or without a
search, instead of gathering all of a contact's emails and sorting them (issue 19: 23-37 ms for
a contact with 6,000 emails and a common word, 60-80 ms for a word common elsewhere;
0.5 and 3.6 ms so). PostgreSQL only: SQLite keeps the emails' own order."""

from django.db import migrations

TABLES = {"sync_email_contacts": "contact_id", "sync_email_companies": "company_id"}

FORWARDS = [
    # sync_email first: the store writes an email, then its links, in one transaction;
    # locking the links first would deadlock with a sync running beside the upgrade.
    "LOCK TABLE sync_email IN SHARE ROW EXCLUSIVE MODE",
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
    # Links written before their email (the foreign keys are checked at commit): their
    # date once the emails come, for a whole insert at once (the store's batches).
    """
    CREATE FUNCTION sync_emails_to_waiting_links() RETURNS trigger AS $$
    BEGIN
        UPDATE sync_email_contacts AS link SET sent_at = email.sent_at FROM inserted AS email
        WHERE link.email_id = email.id AND link.sent_at IS DISTINCT FROM email.sent_at;
        UPDATE sync_email_companies AS link SET sent_at = email.sent_at FROM inserted AS email
        WHERE link.email_id = email.id AND link.sent_at IS DISTINCT FROM email.sent_at;
        RETURN NULL;
    END $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER sync_email_sent_at_to_links AFTER UPDATE OF sent_at ON sync_email"
    " FOR EACH ROW WHEN (OLD.sent_at IS DISTINCT FROM NEW.sent_at)"
    " EXECUTE FUNCTION sync_email_sent_at_to_links()",
    "CREATE TRIGGER sync_emails_to_waiting_links AFTER INSERT ON sync_email"
    " REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT"
    " EXECUTE FUNCTION sync_emails_to_waiting_links()",
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
        )
    ],
]

BACKWARDS = [
    "DROP TRIGGER IF EXISTS sync_emails_to_waiting_links ON sync_email",
    "DROP TRIGGER IF EXISTS sync_email_sent_at_to_links ON sync_email",
    *[
        statement
        for table in TABLES
        for statement in (
            f"DROP TRIGGER IF EXISTS {table}_sent_at ON {table}",
            f"DROP INDEX IF EXISTS {table}_by_date",
            f"ALTER TABLE {table} DROP COLUMN IF EXISTS sent_at",
        )
    ],
    "DROP FUNCTION IF EXISTS sync_emails_to_waiting_links()",
    "DROP FUNCTION IF EXISTS sync_email_sent_at_to_links()",
    "DROP FUNCTION IF EXISTS sync_link_sent_at()",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0005_job_title_trigram_index"),
        ("sync", "0022_mailbox_not_before"),
    ]

    operations = [migrations.RunPython(_run(FORWARDS), _run(BACKWARDS))]
