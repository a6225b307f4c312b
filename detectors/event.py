"""The event model: how every detector and the service read an event's fields and its time.

One owner, so that Sigma, correlation, anomaly checks, alert routing and the inputs cannot
disagree on what ``a.b`` or "the event's time" is (``pipesentry eval`` and ``run`` gave
different times to the same event while each read fields its own way). The rules, and why,
are in ``docs/semantics.md`` ("Values and fields", "Event time"):

- A field path ``a.b.c`` names the nested path, a flat key ``"a.b.c"`` and any mix
  (``{"a.b": {"c": 1}}``); names are case-insensitive (keys are lower-cased), or with
  ``cased=True`` (``rules.field_names: sensitive``) compared exactly as spelled.
- A list contributes each element under its own path (lists of objects are walked).
- Nesting deeper than :data:`MAX_DEPTH` containers is not descended into.
- :func:`values` is every value at a path (what Sigma matches against); :func:`get` is the
  field's one value: the literal key spelled as asked, else the first non-null value of the
  nested spellings (split at the first dot first), else the same with any case; null, an
  empty list and absence are all :data:`MISSING`; a list gives its first non-null element.
- Event time is the first of :data:`DEFAULT_TIME_FIELDS` (or the configured fields) whose
  value :func:`parse_timestamp` reads.

The Sigma engine evaluates over :func:`flatten` (one pass per event, then a dict lookup per
field); :func:`values` is the same rule for one path, and the contract tests hold them equal.
The native screen (``detectors/native/src/walk.rs``, ``time.rs``) mirrors these rules in Rust.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from detectors.errors import DetectorError

__all__ = [
    "DEFAULT_TIME_FIELDS", "EPOCH_MS_THRESHOLD", "MAX_DEPTH", "MAX_TS", "MISSING", "BadTimestamp",
    "Flat", "event_strings", "event_time", "flatten", "get", "parse_timestamp", "to_epoch", "values",
]

Flat = dict[str, list[Any]]

MISSING: Final[Any] = object()
"""Sentinel of :func:`get`: the field is absent, null, or holds no non-null element."""

MAX_DEPTH: Final = 32
"""Containers deeper than this are not descended into (hostile input must not exhaust the stack)."""

DEFAULT_TIME_FIELDS: Final[tuple[str, ...]] = ("@timestamp", "timestamp", "time", "ts", "event.created", "UtcTime")
"""Event time fields tried in order when none is configured (ECS, common loggers, Sysmon)."""

EPOCH_MS_THRESHOLD: Final = 1e11
"""Numbers above this are epoch milliseconds (1e11 s is the year 5138; 1e11 ms is 1973)."""
MAX_TS: Final = 253402300799.0
"""9999-12-31T23:59:59Z: later times cannot be printed as ISO 8601 and are refused."""

_SCALARS = frozenset((str, int, float, bool, type(None)))
_LISTS = (list, tuple)


# -- fields -------------------------------------------------------------------------------

_NAMES: dict[Any, str] = {}
"""Lower-cased field names seen so far (bounded): saves a ``lower()`` per key per event."""


def _fold(key: Any) -> str:
    name = _NAMES.get(key) if type(key) is str else None
    if name is None:
        name = key.lower() if type(key) is str else str(key).lower()
        if type(key) is str and len(_NAMES) < 65536 and len(key) <= 256:
            _NAMES[key] = name
    return name


def flatten(event: Mapping[str, Any], cased: bool = False) -> Flat:
    """Every path of the event (lower-cased; as spelled when ``cased``) with its values: the
    Sigma engine's view.

    Objects are kept at their own path too (``exists`` sees them); a list's elements are
    values of the list's path, and an empty list leaves the path present with no value.
    """
    out: Flat = {}
    (_walk_cased if cased else _walk)(event, "", out, 0)
    return out


_Walker = Callable[[Mapping[str, Any], str, Flat, int], None]


def _walker(names: Mapping[Any, str], name_of: Callable[[Any], str]) -> _Walker:
    """The walk of :func:`flatten` naming keys by ``names`` (a cache), else by ``name_of``: one body
    for both field-name modes; the names reach the Sigma hot loop as closure cells, not calls."""
    def walk(obj: Mapping[str, Any], prefix: str, out: Flat, depth: int) -> None:
        for key, value in obj.items():
            name = names.get(key) if type(key) is str else None
            if name is None:
                name = name_of(key)
            path = f"{prefix}.{name}" if prefix else name
            if type(value) in _SCALARS:
                bucket = out.get(path)
                if bucket is None:
                    out[path] = [value]
                else:
                    bucket.append(value)
            else:
                _add(path, value, out, depth, walk)
    return walk


_walk = _walker(_NAMES, _fold)
_walk_cased = _walker({}, str)  # str() of a str is the str itself
""":func:`_walk` keeping every key as spelled (``rules.field_names: sensitive``)."""


def _add(path: str, value: Any, out: Flat, depth: int, walk: _Walker) -> None:
    if isinstance(value, _LISTS):
        if path not in out:
            out[path] = []
        if depth < MAX_DEPTH:
            for element in value:
                _add(path, element, out, depth + 1, walk)
        return
    bucket = out.get(path)
    if bucket is None:
        out[path] = [value]
    else:
        bucket.append(value)
    if isinstance(value, Mapping) and depth < MAX_DEPTH:
        walk(value, path, out, depth + 1)


def event_strings(flat: Flat) -> list[str]:
    """Every string value of the event (any depth): the domain of keyword search."""
    return [v for values in flat.values() for v in values if type(v) is str]


def values(event: Mapping[str, Any], path: str, cased: bool = False) -> list[Any]:
    """Every value at ``path`` (case-insensitive unless ``cased``), in event order:
    ``flatten(event, cased)[path]`` (``path.lower()`` when not cased) without flattening the
    rest of the event."""
    return list(_children(event, path if cased else path.lower(), True, 0, cased))


def get(event: Mapping[str, Any] | None, path: str, cased: bool = False) -> Any:
    """The field's one value, or :data:`MISSING` (see the module docstring for the order);
    ``cased``: only the spellings exactly as asked (no other case)."""
    if event is None:
        return MISSING
    value = event.get(path, MISSING)
    if value is not None and type(value) in _SCALARS:  # the literal key holds a scalar: _get's first answer
        return value
    if cased:
        return _get_cased(event, path)
    return _get(event, path, {})


def _get_cased(event: Mapping[str, Any], path: str) -> Any:
    """:func:`_get`'s exact-spelling half: the literal key, then the nested and mixed spellings."""
    value = event.get(path, MISSING)
    if value is not MISSING:
        if type(value) in _SCALARS:
            if value is not None:
                return value
        else:
            found = _first(_node(value, "", not path, 0, True, True))
            if found is not MISSING:
                return found
    heads = _heads(path)[0]
    if "" in event or (heads and not event.keys().isdisjoint(heads)):
        return _first(_find(event, path, True, 0, _exact))
    return MISSING


_Keys = Callable[[Mapping[Any, Any], str], Sequence[Any]]


def _get(event: Mapping[str, Any], path: str, folded: dict[int, dict[str, tuple[Any, ...]]]) -> Any:
    """:func:`get` with a cache of case-folded key maps (``id(obj) ->``) shared by the lookups
    of one event (:func:`event_time` tries several names on one event)."""
    value = event.get(path, MISSING)
    if value is not MISSING:
        if type(value) in _SCALARS:
            if value is not None:
                return value
        else:
            found = _first(_node(value, "", not path, 0, True))
            if found is not MISSING:
                return found
    heads, lowered, folded_heads = _heads(path)
    if "" in event or (heads and not event.keys().isdisjoint(heads)):  # else only the literal key
        found = _first(_find(event, path, True, 0, _exact))
        if found is not MISSING:
            return found
    table = folded.get(id(event))
    if table is None:
        table = folded[id(event)] = _folded_keys(event)
    if "" not in table:
        if table.keys().isdisjoint(folded_heads):
            return MISSING
        if not heads:  # a top-level key in another case (``Image`` for ``image``): no search
            for key in table[lowered]:
                value = event[key]
                if type(value) in _SCALARS:
                    if value is not None:
                        return value
                    continue
                found = _first(_seek(value, "", 0, _exact, True))
                if found is not MISSING:
                    return found
            return MISSING

    def keys(obj: Mapping[Any, Any], name: str) -> Sequence[Any]:
        table = folded.get(id(obj))
        if table is None:
            table = folded[id(obj)] = _folded_keys(obj)
        return [obj[key] for key in table.get(name, ())]

    return _first(_find(event, lowered, True, 0, keys))


@lru_cache(maxsize=4096)
def _heads(path: str) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    """The proper prefixes of ``path`` that end before a dot (the keys a nested or mixed
    spelling starts with), ``path`` lower-cased, and its whole set of lower-cased starts."""
    heads = tuple(path[:i] for i, char in enumerate(path) if char == ".")
    lowered = path.lower()
    return heads, lowered, (*(head.lower() for head in heads), lowered)


_TABLES: dict[tuple[Any, ...], dict[str, tuple[Any, ...]]] = {}
"""Case-folded name -> keys, per key set seen (bounded): events of one source share their keys,
so a case-insensitive lookup costs a hash of the key tuple, not a ``lower()`` per key."""
_TABLE_KEYS = 64
_TABLE_COUNT = 4096
_TABLE_CHARS = 4096
"""Key sets with more keys or longer names than this are not kept (hostile events must not fill memory)."""


def _folded_keys(obj: Mapping[Any, Any]) -> dict[str, tuple[Any, ...]]:
    shape = tuple(obj)
    table = _TABLES.get(shape) if len(shape) <= _TABLE_KEYS else None
    if table is None:
        grouped: dict[str, list[Any]] = {}
        chars = 0
        for key in shape:
            name = _fold(key)
            chars += len(name)
            grouped.setdefault(name, []).append(key)
        table = {name: tuple(keys) for name, keys in grouped.items()}
        if len(shape) <= _TABLE_KEYS and chars <= _TABLE_CHARS:
            if len(_TABLES) >= _TABLE_COUNT:
                _TABLES.clear()
            _TABLES[shape] = table
    return table


def _exact(obj: Mapping[Any, Any], name: str) -> Sequence[Any]:
    value = obj.get(name, MISSING)
    return () if value is MISSING else (value,)


def _find(obj: Mapping[Any, Any], rest: str, blank: bool, depth: int, keys: _Keys) -> Iterator[Any]:
    """Values at ``rest`` below ``obj`` (see :func:`_children`), found by looking up each key
    ``rest`` can start with instead of reading every key: what :func:`get` uses."""
    dot = rest.find(".")
    while dot != -1:
        if dot or not blank:
            for value in keys(obj, rest[:dot]):
                yield from _seek(value, rest[dot + 1:], depth, keys, False)
        dot = rest.find(".", dot + 1)
    if rest or not blank:
        for value in keys(obj, rest):
            yield from _seek(value, "", depth, keys, True)
    if blank:
        for value in keys(obj, ""):
            yield from _seek(value, rest, depth, keys, not rest, True)


def _seek(value: Any, rest: str, depth: int, keys: _Keys, here: bool, blank: bool = False) -> Iterator[Any]:
    if isinstance(value, _LISTS):
        if depth < MAX_DEPTH:
            for element in value:
                yield from _seek(element, rest, depth + 1, keys, here, blank)
        return
    if here:
        yield value
    if isinstance(value, Mapping) and depth < MAX_DEPTH and (blank or not here):
        yield from _find(value, rest, blank, depth + 1, keys)


def _first(found: Iterator[Any]) -> Any:
    for value in found:
        if value is not None:
            return value
    return MISSING


def _children(obj: Mapping[str, Any], rest: str, blank: bool, depth: int, cased: bool = False) -> Iterator[Any]:
    """Values at ``rest`` below ``obj``, whose own path is a prefix of the wanted one.

    ``blank``: ``obj``'s path is empty, so a key is a whole path (``flatten`` joins no dot to
    an empty path); otherwise a key is joined to the path with a dot and ``rest`` is what
    follows that dot in the wanted path. ``cased``: keys are compared as spelled.
    """
    for key, value in obj.items():
        name = (key if type(key) is str else str(key)) if cased else _fold(key)
        if blank and not name:
            yield from _node(value, rest, True, depth, not rest, cased)
        elif name == rest:
            yield from _node(value, "", False, depth, True, cased)
        elif rest.startswith(name) and rest[len(name):len(name) + 1] == ".":
            yield from _node(value, rest[len(name) + 1:], False, depth, False, cased)


def _node(value: Any, rest: str, blank: bool, depth: int, here: bool, cased: bool = False) -> Iterator[Any]:
    """Values from ``value`` on; ``here``: ``value`` sits at the wanted path itself."""
    if isinstance(value, _LISTS):
        if depth < MAX_DEPTH:
            for element in value:
                yield from _node(element, rest, blank, depth + 1, here, cased)
        return
    if here:
        yield value
    if isinstance(value, Mapping) and depth < MAX_DEPTH and (blank or not here):
        yield from _children(value, rest, blank, depth + 1, cased)


# -- time ---------------------------------------------------------------------------------


class BadTimestamp(DetectorError, ValueError):
    """A timestamp value that is present but cannot be read."""


def parse_timestamp(value: Any) -> float:
    """Epoch seconds from ``value``; raises :class:`BadTimestamp` saying why not.

    Accepted: epoch seconds or milliseconds (numbers or numeric strings; values above
    :data:`EPOCH_MS_THRESHOLD` are milliseconds), ISO 8601 strings (``Z`` or an offset; no
    offset means UTC) and ``datetime`` objects. Times before 1970 or after 9999 are refused.
    """
    if isinstance(value, bool) or value is None:
        raise BadTimestamp(f"{value!r} is not a timestamp")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) >= 10 and text[4] == "-":  # ISO 8601 first: cheaper than a failed float()
            return _iso_seconds(text)
        try:
            ts = float(text)
        except ValueError:
            return _iso_seconds(text)
    elif isinstance(value, datetime):
        ts = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()
    else:
        raise BadTimestamp(f"{type(value).__name__} is not a timestamp")
    if not math.isfinite(ts) or ts < 0:
        raise BadTimestamp(f"timestamp out of range: {value!r}")
    if ts > EPOCH_MS_THRESHOLD:
        ts /= 1000.0
    if ts > MAX_TS:
        raise BadTimestamp(f"timestamp out of range: {value!r}")
    return ts


def _iso_seconds(text: str) -> float:
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise BadTimestamp(f"unparseable timestamp {text[:64]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    ts = parsed.timestamp()
    if ts < 0:
        raise BadTimestamp(f"timestamp before 1970: {text[:64]!r}")
    return ts


_last: tuple[str | None, float | None] = (None, None)
"""The last string read by :func:`to_epoch` and its result: events of one batch often share a
timestamp. One tuple, replaced whole, so concurrent readers never see a torn pair."""


def to_epoch(value: Any) -> float | None:
    """Epoch seconds from ``value``, or None when it is not a readable timestamp."""
    global _last
    if type(value) is str:
        last = _last
        if value == last[0]:
            return last[1]
    try:
        result: float | None = parse_timestamp(value)
    except BadTimestamp:
        result = None
    if type(value) is str:
        _last = (value, result)
    return result


def event_time(event: Mapping[str, Any], fields: Sequence[str] = DEFAULT_TIME_FIELDS,
               cased: bool = False) -> float | None:
    """Epoch seconds from the first of ``fields`` whose value (:func:`get`) is a readable time.

    The same as ``to_epoch(get(event, name, cased))`` over ``fields``, but a name the event cannot
    hold (no key it could start with, in any case) costs a set operation, not a search: most
    events lack most time fields, and this runs once per event.
    """
    if cased:
        for name in fields:
            raw = get(event, name, True)
            if raw is not MISSING:
                parsed = to_epoch(raw)
                if parsed is not None:
                    return parsed
        return None
    plan = _PLANS.get(id(fields))
    if plan is None or plan[0] is not fields:
        plan = _time_plan(fields)
    _, exact_all, folded_all, names, timeless = plan
    folded: dict[int, dict[str, tuple[Any, ...]]] = {}
    generic = "" in event
    table = None
    if not generic and event.keys().isdisjoint(exact_all):
        shape = tuple(event)
        if shape in timeless:  # keys seen before, none of which can hold a time field
            return None
        table = folded[id(event)] = _folded_keys(event)
        if table.keys().isdisjoint(folded_all):
            if len(shape) <= _TABLE_KEYS and shape in _TABLES:  # bounded as the tables are
                if len(timeless) >= _TABLE_COUNT:
                    timeless.clear()
                timeless[shape] = None
            return None
    for name, exact, folded_starts in names:
        raw = event.get(name, MISSING)
        if raw is None or type(raw) not in _SCALARS:
            if raw is MISSING and not generic and event.keys().isdisjoint(exact):
                if table is None:
                    table = folded[id(event)] = _folded_keys(event)
                if table.keys().isdisjoint(folded_starts):
                    continue
            raw = _get(event, name, folded)
            if raw is MISSING:
                continue
        parsed = to_epoch(raw)
        if parsed is not None:
            return parsed
    return None


_Plan = tuple[Sequence[str], frozenset[str], frozenset[str], tuple[tuple[str, frozenset[str], frozenset[str]], ...],
              dict[tuple[Any, ...], None]]
"""fields, every top-level key that can hold one (as spelled, folded), per field its keys, and the key
tuples (bounded) of events seen holding none of them: an event source repeats its keys."""


def _time_plan(fields: Sequence[str]) -> _Plan:
    """Per time field the top-level keys that can hold it, as spelled and lower-cased; the last
    plans of tuples are kept by identity (an input passes the same tuple for every event)."""
    names = []
    for name in fields:
        heads, _, folded_heads = _heads(name)
        names.append((name, frozenset((*heads, name)), frozenset(folded_heads)))
    plan: _Plan = (fields, frozenset().union(*(n[1] for n in names)), frozenset().union(*(n[2] for n in names)),
                   tuple(names), {})
    if type(fields) is tuple:  # a list could change after it was planned
        if len(_PLANS) >= 256:
            _PLANS.clear()
        _PLANS[id(fields)] = plan  # the plan holds ``fields``: the id stays its own while cached
    return plan


_PLANS: dict[int, _Plan] = {}
