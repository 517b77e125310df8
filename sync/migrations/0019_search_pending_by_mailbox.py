from django.db import migrations

# Issue 19: a search (sync.search.matching) finds the emails still waiting for their
# vector among those of the user's mailboxes, and the Email page counts them
# (vectors_waiting). Through 0018's index of every waiting email (by id, for the fill's
# order) the planner read all of them, every mailbox's, on each search: during another
# user's first sync of 150,000 emails a search took 100 ms (a parallel scan of the
# table) instead of 5. This one, by mailbox, reads only the user's. None on SQLite.
INDEX = "CREATE INDEX email_search_pending_account ON sync_email (account_id) WHERE search IS NULL"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(INDEX)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS email_search_pending_account")


class Migration(migrations.Migration):
    dependencies = [("sync", "0018_search_vectors_later")]

    operations = [migrations.RunPython(forwards, backwards)]
