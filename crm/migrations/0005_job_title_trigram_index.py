from django.db import migrations

# Issue 19: the Contacts list's search is a UNION of lookups (crm.views.timelines), each served
# by a trigram index; 0004 gave the others theirs. None on SQLite.
INDEX = (
    "CREATE INDEX crm_contact_job_title_trgm ON crm_contact"
    " USING gin ((UPPER(job_title::text)) gin_trgm_ops)"
)


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(INDEX)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS crm_contact_job_title_trgm")


class Migration(migrations.Migration):
    dependencies = [("crm", "0004_trigram_search_indexes")]

    operations = [migrations.RunPython(forwards, backwards)]
