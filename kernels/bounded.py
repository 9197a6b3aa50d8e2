"""A small least-recently-used cache for compiled kernels and timings, so a long session of many shapes does not
keep every one it ever saw."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable


class BoundedCache:
    """At most `size` entries; `get(key, make)` returns the entry, making it with `make()` when absent."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], object]):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
