"""`AnyOf(F("column"), ids)`: a filter on a long list of values, sent to PostgreSQL as
one array parameter (`column = ANY(%s)`) instead of `IN (%s, %s, …)`.

Why: the pages read their rows by a few hundred ids at a time (issue 19). As an IN list,
each id is a parameter that Django prepares, psycopg finds in the query text and the
planner reads: 400 ids cost 3.5 ms where the array costs 1.4 ms. Elsewhere (SQLite) it
is an IN list. For plain values (ids) of one type, not model instances (an int beyond an
integer column's range is an error, as in SQL; `__in` drops it); unlike the keyword `__in`,
`exclude()` with it on a nullable column leaves the NULL rows out, as SQL's `NOT (x = ANY
…)` does."""

from django.core.exceptions import EmptyResultSet
from django.db.models.lookups import In
from django.utils.datastructures import OrderedSet

_INTEGERS = {"smallint", "integer", "bigint"}


class AnyOf(In):
    lookup_name = "any"

    def as_postgresql(self, compiler, connection):
        if not self.rhs_is_direct_value():
            return super().as_sql(compiler, connection)
        lhs, lhs_params = self.process_lhs(compiler, connection)
        values = OrderedSet(self.rhs)
        values.discard(None)
        if not values:
            raise EmptyResultSet
        field = self.lhs.output_field
        cast = field.cast_db_type(connection)
        if cast in _INTEGERS and set(map(type, values)) == {int}:
            # Ids as one array literal of the column's type: psycopg looks through a
            # list of ints in Python for the smallest type that holds them all, and
            # Django prepares each value (a query by 2,000 ids took 2.8 ms of CPU with
            # its 2,000 rows, 1.5 ms so). str() of an int is its digits.
            literal = "{" + ",".join(map(str, values)) + "}"
            return f"{lhs} = ANY(%s::{cast}[])", (*lhs_params, literal)
        prepared = [field.get_db_prep_value(value, connection, prepared=True) for value in values]
        return f"{lhs} = ANY(%s)", (*lhs_params, prepared)
