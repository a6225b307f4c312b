"""Pure helpers for detector state snapshots, shared by stateful detectors.

Why: the correlation engine and the anomaly engine both keep per-key state that
must (a) stay bounded and (b) survive restarts as plain JSON-able dicts that the
service persists per scope (``service/state_store.py``). This module owns the
two shared pieces and nothing else; it does no I/O.

API (small on purpose):

``wrap(kind, version, body) -> dict``
    A snapshot envelope ``{"format": "pipesentry-state", "kind": kind,
    "version": version, "body": body}``.
``unwrap(snapshot, kind, versions) -> dict``
    The body of an envelope; raises :class:`StateError` when the snapshot is
    not a mapping, names another kind, or has a version not in ``versions``.
``LruMap(max_keys)``
    A dict-like map capped at ``max_keys`` entries; ``touch``/``put`` make a
    key most-recent, inserting past the cap evicts the least-recent key and
    counts it in ``evictions``. ``items()`` iterates oldest first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from detectors.errors import DetectorError

FORMAT = "pipesentry-state"

K = TypeVar("K")
V = TypeVar("V")


class StateError(DetectorError, ValueError):
    """A snapshot that cannot be restored (wrong kind, version or shape)."""


def wrap(kind: str, version: int, body: Mapping[str, Any]) -> dict[str, Any]:
    """Put ``body`` in a versioned envelope."""
    return {"format": FORMAT, "kind": kind, "version": version, "body": dict(body)}


def unwrap(snapshot: Any, kind: str, versions: tuple[int, ...]) -> dict[str, Any]:
    """The body of a snapshot made by :func:`wrap`; :class:`StateError` if it is not usable."""
    if not isinstance(snapshot, Mapping):
        raise StateError(f"snapshot is a {type(snapshot).__name__}, not a mapping")
    if snapshot.get("format") != FORMAT:
        raise StateError(f"snapshot format is {snapshot.get('format')!r}, expected {FORMAT!r}")
    if snapshot.get("kind") != kind:
        raise StateError(f"snapshot is for {snapshot.get('kind')!r}, expected {kind!r}")
    if snapshot.get("version") not in versions:
        raise StateError(f"snapshot version {snapshot.get('version')!r} is not one of {versions}")
    body = snapshot.get("body")
    if not isinstance(body, Mapping):
        raise StateError("snapshot body is not a mapping")
    return dict(body)


class LruMap(Generic[K, V]):
    """Bounded map with least-recently-used eviction and an eviction counter.

    ``on_evict`` (optional) is called with each evicted key and value, so an
    owner can drop side structures that refer to the key.
    """

    __slots__ = ("_data", "evictions", "max_keys", "on_evict")

    def __init__(self, max_keys: int, on_evict: Callable[[K, V], None] | None = None) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self.evictions = 0
        self.on_evict = on_evict
        self._data: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        """The value, without changing recency."""
        return self._data.get(key)

    def touch(self, key: K) -> V | None:
        """The value, made most-recent (``None`` if absent)."""
        data = self._data
        value = data.get(key)
        if value is not None:
            data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Insert or replace ``key`` as most-recent; evicts the oldest past the cap."""
        data = self._data
        data[key] = value
        data.move_to_end(key)
        while len(data) > self.max_keys:
            old_key, old_value = data.popitem(last=False)
            self.evictions += 1
            if self.on_evict is not None:
                self.on_evict(old_key, old_value)

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def oldest(self) -> tuple[K, V] | None:
        """The least-recent entry, or ``None`` when empty."""
        for item in self._data.items():
            return item
        return None

    def items(self) -> Iterator[tuple[K, V]]:
        """Entries, least-recent first (do not mutate while iterating)."""
        return iter(self._data.items())

    def keys(self) -> Iterator[K]:
        return iter(self._data.keys())

    def clear(self) -> None:
        self._data.clear()
