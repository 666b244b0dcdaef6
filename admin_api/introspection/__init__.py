"""Introspection: `POST /query` (SQL over kinvoke's state as Restate 1.7.12's tables) and
`GET /invocations[/{id}]`, served from the admin's read-only view of the changelog.

- `schema`: the tables, their columns and Arrow types, the `sys_invocation` view;
- `rows`, `journal_json`: kinvoke's records as rows (journal entries as Restate's JSON);
- `index`: the tables kept up to date as the changelog arrives;
- `query`: planning, loading only what a query reads, answers (JSON rows or Arrow IPC);
- `rest`: the seed's Invocation objects, with filters and paging;
- `view`: the changelog view that feeds them.
"""

from admin_api.introspection.query import QueryError, Source, arrow_stream, rows_json, run_query
from admin_api.introspection.rest import BadRequest, get_invocation, invocation_json, list_invocations
from admin_api.introspection.view import ChangelogView

__all__ = [
    "BadRequest",
    "ChangelogView",
    "QueryError",
    "Source",
    "arrow_stream",
    "get_invocation",
    "invocation_json",
    "list_invocations",
    "rows_json",
    "run_query",
]
