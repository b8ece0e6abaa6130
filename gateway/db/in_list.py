"""`column IN (a list bound by name)` whose SQL does not depend on the list's length.

An expanding IN renders one placeholder per value, so each length is a statement of its own; on
PostgreSQL asyncpg prepares every statement (a round trip, a parse and a plan on the server) and
keeps the last 100 per connection. With the hot paths' lists anywhere from 1 to 500 long, 39 %
of executions missed that cache and had to be prepared first, and the caches of a full pool held
about 20 MiB. On PostgreSQL this renders `column = ANY($1::type[])`: one statement whatever the
length, prepared once per connection. Elsewhere (SQLite) it stays an expanding IN.

The list comes with the execution's parameters, by name: `execute(stmt, {"ids": [1, 2]})`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, String, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal, _TraverseInternalsType


class InList(ColumnElement[bool]):
    inherit_cache = True
    type = Boolean()
    # A predicate already, like a comparison: no `= 1` where booleans are integers (SQLite).
    _is_implicitly_boolean = True
    _traverse_internals: _TraverseInternalsType = [  # noqa: RUF012 - SQLAlchemy's own declaration
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
        ("negate", InternalTraversal.dp_boolean),
    ]

    def __init__(self, column: ColumnElement[Any], name: str, negate: bool = False) -> None:
        self.column = column
        self.name = name
        self.negate = negate


def in_list(column: Any, name: str) -> InList:
    """`column` is one of the values of the list passed as parameter `name`."""
    return InList(column, name)


def not_in_list(column: Any, name: str) -> InList:
    """`column` is none of the values of the list passed as parameter `name` (true if it is empty)."""
    return InList(column, name, negate=True)


@compiles(InList)
def _expanding(element: InList, compiler: Any, **kw: Any) -> str:
    values: BindParameter[Any] = bindparam(element.name, expanding=True)
    test = element.column.not_in(values) if element.negate else element.column.in_(values)
    return str(compiler.process(test, **kw))


@compiles(InList, "postgresql")
def _any_array(element: InList, compiler: Any, **kw: Any) -> str:
    item = element.column.type
    if isinstance(item, String):
        # Without the column's length: a cast to VARCHAR(n)[] cuts longer values to n characters,
        # and a value longer than the column would then match the one it starts with.
        item = String()
    array = compiler.process(bindparam(element.name, type_=ARRAY(item)), **kw)
    column = compiler.process(element.column, **kw)
    return f"{column} <> ALL({array})" if element.negate else f"{column} = ANY({array})"
