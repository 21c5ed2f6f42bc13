"""How route parameters are read: an `<int:...>` never exceeds what the id column holds."""

from __future__ import annotations

from typing import Any

from werkzeug.routing import IntegerConverter, Map

MAX_ID = 2**31 - 1  # tasks.id is a 32-bit integer on PostgreSQL


class BoundedInt(IntegerConverter):
    """Route integers fit the id column, so a huge one is a 404 and never reaches the database."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)
