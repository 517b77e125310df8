"""Model indexes of our own."""

import copy

from django.db import models


class PostgresCoveringIndex(models.Index):
    """An index that on PostgreSQL also carries `covers` (INCLUDE), so that a query can
    read those columns from the index alone; a plain index elsewhere. SQLite has no
    INCLUDE, and Django's own `include` would warn of that there (models.W040) and be
    dropped. Built by its class wherever Django builds it (a migration's AddIndex, a
    SQLite table remade), so no later change can lose the INCLUDE unawares."""

    def __init__(self, *args, covers=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.covers = tuple(covers)

    def deconstruct(self):
        path, args, kwargs = super().deconstruct()
        if self.covers:
            kwargs["covers"] = self.covers
        return path, args, kwargs

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor == "postgresql" and self.covers:
            covering = copy.copy(self)
            covering.include = self.covers
            return models.Index.create_sql(covering, model, schema_editor, using, **kwargs)
        return super().create_sql(model, schema_editor, using, **kwargs)
