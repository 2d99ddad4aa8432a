"""Cache keys that name an object by identity while holding it."""

from __future__ import annotations

from typing import Any

__all__ = ["Same"]


class Same:
    """Equal only to a ``Same`` of the very same object; usable in tuples compared with ``==``
    (tensors there would compare by value, element by element).

    It holds the object: an ``id()`` alone could be handed to a new object once the first is
    freed, and a cache keyed on it would then take one object for the other.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)  # stable: the object is held, so its id is not reused

    def __repr__(self) -> str:
        return f"Same({type(self.obj).__name__} at {id(self.obj):#x})"
