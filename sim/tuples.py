"""Named tuples that kernels take (inputs, event buffers, history rings), one class per
field list.

Numba caches a compiled kernel under its argument types, and a named tuple's type names its class,
so the class must be found again by name when the cache is loaded in another process, before the
game that made it exists there. A class is therefore fully described by its name
(``K__field__field...``) and this module makes any such class on demand (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import collections
from typing import Any, Final

_PREFIX: Final = "K__"
_SEP: Final = "__"
_classes: dict[str, type[tuple[Any, ...]]] = {}


def tuple_class(fields: tuple[str, ...] | list[str]) -> type[tuple[Any, ...]]:
    """The named-tuple class with these fields (the same class for the same fields)."""
    fields = tuple(fields)
    for f in fields:
        if not f.isidentifier() or _SEP in f or f.startswith("_"):
            raise ValueError(f"kernel tuple field {f!r}: an identifier without '__' and not starting with '_'")
    name = _PREFIX + _SEP.join(fields)
    hit = _classes.get(name)
    if hit is None:
        made: Any = collections.namedtuple(name, fields)  # type: ignore[misc]
        made.__module__ = __name__
        hit = _classes[name] = made
    return hit


def __getattr__(name: str) -> type[tuple[Any, ...]]:
    if name.startswith(_PREFIX):
        return tuple_class(name[len(_PREFIX) :].split(_SEP))
    raise AttributeError(name)
