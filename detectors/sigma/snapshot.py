"""A compiled ruleset as bytes and back: what the on-disk ruleset cache keeps (pure: bytes in, bytes out).

Compiling the SigmaHQ corpus costs seconds (YAML, pySigma's parsing, the compiler); a snapshot
keeps what that work produced as plain data, and :func:`restore` rebuilds the same
:class:`~detectors.sigma.engine.Ruleset` from it in a fraction of the time:

- each atom's recipe (kind, field, test; see :data:`~detectors.sigma.detection.Recipe`), built
  again with :func:`~detectors.sigma.detection.make_atom` (regexes and globs are compiled again:
  compiled patterns and closures are not data);
- each rule's metadata, condition IR and what the compiler derived from it (atom ids, trigger
  clauses); its predicate is made from the IR on the rule's first evaluation
  (:class:`~detectors.sigma.compiled.LazyPredicate`), as :func:`~detectors.sigma.compiled.compiled_rule` makes it;
- the unrouted route (every rule, ``logsource=None``, what an input without log source uses): its
  rule index as plain data (:meth:`~detectors.sigma.index.RuleIndex.state`; the automata are built
  again from their keys) and its native screen's plan (:func:`~detectors.sigma.screen.export_plan`),
  as bytes of their own read on the route's first request (a routed stream never pays for them;
  if they do not read back, the route is built from the rules as without the cache);
- correlation rules (pySigma objects), filters and the compile errors, as they were.

A compile memo (:class:`~detectors.sigma.memo.CompileMemo`: what a compile made of each text, for a
hot reload to reuse) is kept apart, as bytes of its own (:func:`memo_snapshot`, :func:`restore_memo`):
a start restored from the cache reads it only when it reloads.

Restoring imports no pySigma parser (only the modules of the classes a snapshot holds: a
ruleset with correlation rules brings ``sigma.correlations``).

The bytes are a pickle read by an unpickler that only builds the classes a ruleset holds (this
project's rule metadata, pySigma's rule and condition types, ``uuid``, ``datetime``, ``pathlib``):
a damaged or foreign snapshot is a :class:`SnapshotError`, never code run. Which snapshot belongs to
which rules is the caller's business (``service.rules_cache`` keys them by a hash of their inputs).
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from functools import partial
from typing import Any

from detectors.errors import DetectorError
from detectors.model import LogSource, RuleInfo
from detectors.sigma.compiled import CompiledRule, restored_rule, rule_parts
from detectors.sigma.conditions import Node
from detectors.sigma.engine import Ruleset
from detectors.sigma.errors import RuleError
from detectors.sigma.index import RuleIndex
from detectors.sigma.memo import CompileMemo, Outcome, RuleUnit, TextKey, TextUnit
from detectors.sigma.recipes import make_atom
from detectors.sigma.regex import DEFAULT_TIMEOUT_MS
from detectors.sigma.result import LoadResult
from detectors.sigma.screen import export_plan
from detectors.sigma.screen_abi import Plan
from detectors.sigma.text import Pattern

MAGIC = b"pipesentry-ruleset-snapshot/2\n"
"""First bytes of every snapshot; another format (or a file that is not one) is refused."""
MEMO_MAGIC = b"pipesentry-compile-memo/1\n"
"""First bytes of a compile memo's snapshot."""

_MODULES = frozenset({
    "detectors.model", "detectors.sigma.errors", "detectors.sigma.memo", "detectors.sigma.screen_abi",
    "detectors.sigma.text",
    "uuid", "datetime", "pathlib",
    "sigma.conditions", "sigma.correlations", "sigma.exceptions", "sigma.modifiers", "sigma.types",
})
"""Modules whose classes a snapshot may build (plus ``sigma.rule.*``)."""
_BUILTINS = frozenset({"set", "frozenset", "slice", "complex", "bytearray"})


class SnapshotError(DetectorError, ValueError):
    """A snapshot that cannot be read back (damaged, truncated, of another format or version)."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = module in _MODULES or module.startswith("sigma.rule.") or module == "sigma.rule" or (
            module == "builtins" and name in _BUILTINS)
        if not allowed or name.startswith("_"):
            raise SnapshotError(f"a ruleset snapshot does not hold {module}.{name}")
        return super().find_class(module, name)


_BY_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls))
    for cls in (RuleInfo, LogSource, Pattern, RuleError, Outcome, RuleUnit, TextUnit)}
"""Frozen dataclasses written as a constructor call with their fields: read back, ``cls(*fields)`` is
several times cheaper than pickle's default (``__setstate__``, field by field, in Python)."""


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        names = _BY_FIELDS.get(type(obj))
        if names is None:
            return NotImplemented
        return type(obj), tuple(getattr(obj, name) for name in names)


def _plain(value: Any) -> Any:
    """A screen plan's part as the native side reads it: tuples, lists, ints, strings (its named tuples
    and enums are tuples and ints to it), ~3x cheaper to read back than the typed objects."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return int(value) if isinstance(value, int) else float(value)  # IntEnum members: their codes
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    raise TypeError(f"unexpected {type(value).__name__} in a screen plan")


def _dumps(value: Any) -> bytes:
    out = io.BytesIO()
    _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return out.getvalue()


def snapshot(result: LoadResult) -> bytes | None:
    """The bytes of ``result`` (ruleset and compile errors), or None when it cannot be kept
    (built without recipes, or holding an object pickle cannot write). Builds the unrouted
    route's index if it is not built yet (it is kept too)."""
    ruleset = result.ruleset
    if ruleset.recipes is None:
        return None
    positions = {id(rule): position for position, rule in enumerate(ruleset.compiled)}
    index = ruleset.route_index(None)
    try:
        plan = export_plan(index, ruleset._atoms, ruleset.cased_fields)
        route = _dumps((index.state(positions), tuple(_plain(part) for part in plan)))
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
        route = None  # the route is then built from the rules on first use
    payload = {
        "recipes": list(ruleset.recipes),
        "rules": [rule_parts(rule) for rule in ruleset.compiled],
        "route": route,
        "correlations": list(ruleset.correlations),
        "filters": list(ruleset.filters),
        "errors": list(result.errors),
        "cased_fields": ruleset.cased_fields,
    }
    try:
        return MAGIC + _dumps(payload)
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
        return None


def restore(data: bytes, regex_timeout_ms: float = DEFAULT_TIMEOUT_MS) -> LoadResult:
    """The :class:`LoadResult` a snapshot was made of; raises :class:`SnapshotError`."""
    if not data.startswith(MAGIC):
        raise SnapshotError("not a ruleset snapshot of this format")
    try:
        payload = _Unpickler(io.BytesIO(memoryview(data)[len(MAGIC):])).load()
    except SnapshotError:
        raise
    except Exception as exc:  # a damaged pickle raises many types
        raise SnapshotError(f"damaged ruleset snapshot: {type(exc).__name__}") from None
    try:
        return _build(payload, regex_timeout_ms)
    except SnapshotError:
        raise
    except Exception as exc:  # a well-formed pickle of the wrong shape
        raise SnapshotError(f"ruleset snapshot of an unexpected shape: {type(exc).__name__}: {exc}") from None


def memo_snapshot(memo: CompileMemo) -> bytes | None:
    """The bytes of what ``memo`` holds (its context and units), or None when it holds nothing (or an
    object pickle cannot write)."""
    if memo.context is None or not memo.units:
        return None
    try:
        return MEMO_MAGIC + _dumps((memo.context, memo.units))
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
        return None


def restore_memo(data: bytes) -> tuple[object, dict[TextKey, TextUnit]]:
    """The context and units a memo snapshot was made of; raises :class:`SnapshotError`."""
    if not data.startswith(MEMO_MAGIC):
        raise SnapshotError("not a compile memo snapshot of this format")
    try:
        context, units = _Unpickler(io.BytesIO(memoryview(data)[len(MEMO_MAGIC):])).load()
    except SnapshotError:
        raise
    except Exception as exc:  # a damaged pickle raises many types
        raise SnapshotError(f"damaged compile memo snapshot: {type(exc).__name__}") from None
    if not isinstance(context, tuple) or not isinstance(units, dict) or not all(
            isinstance(key, tuple) and len(key) == 3 and all(type(part) is str for part in key)
            and isinstance(unit, TextUnit) and type(unit.rules) is tuple
            and all(isinstance(rule, RuleUnit) for rule in unit.rules) for key, unit in units.items()):
        raise SnapshotError("compile memo snapshot of an unexpected shape")
    return context, units


def _build(payload: Any, regex_timeout_ms: float) -> LoadResult:
    if not isinstance(payload, dict):
        raise SnapshotError("ruleset snapshot of an unexpected shape")
    recipes = payload["recipes"]
    counters = {"regex_timeouts": 0}
    atoms = [make_atom(tuple(key), str(display), counters, regex_timeout_ms) for key, display in recipes]
    compiled = []
    for parts in payload["rules"]:
        info, node, order, atom_ids, positives, trigger = parts
        if not isinstance(info, RuleInfo) or not isinstance(order, int):
            raise SnapshotError("ruleset snapshot of an unexpected shape")
        _check(node, len(atoms))
        if not _ids_below(atom_ids, len(atoms)) or not _ids_below(positives, len(atoms)) or not (
                trigger is None or all(_ids_below(clause, len(atoms)) for clause in trigger)):
            raise SnapshotError("ruleset snapshot names an unknown atom")
        compiled.append(restored_rule(parts, atoms))
    correlations = [(info, corr) for info, corr in payload["correlations"]]
    filters = list(payload["filters"])
    errors = list(payload["errors"])
    if not all(isinstance(info, RuleInfo) for info, _ in correlations) or not all(
            isinstance(info, RuleInfo) for info in filters) or not all(isinstance(e, RuleError) for e in errors):
        raise SnapshotError("ruleset snapshot of an unexpected shape")
    cased_fields = payload.get("cased_fields", False)
    if type(cased_fields) is not bool:
        raise SnapshotError("ruleset snapshot of an unexpected shape")
    ruleset = Ruleset(compiled, atoms, correlations, filters, counters, recipes=recipes, cased_fields=cased_fields)
    route = payload.get("route")
    if route is not None:
        if not isinstance(route, bytes):
            raise SnapshotError("ruleset snapshot of an unexpected shape")
        ruleset.adopt_unrouted(partial(_unrouted, route, ruleset.compiled, len(atoms)))
    return LoadResult(ruleset=ruleset, errors=errors, restored=True)


def _unrouted(data: bytes, rules: tuple[CompiledRule, ...], atoms: int) -> tuple[RuleIndex, Plan] | None:
    """The unrouted route's index and screen plan from their snapshot (read on the route's first
    request: a routed stream never pays for it), or None when they do not read back: the route is
    then built from the rules as without the cache."""
    try:
        state, parts = _Unpickler(io.BytesIO(data)).load()
        if not isinstance(parts, tuple) or len(parts) != len(Plan._fields):
            return None
        return RuleIndex.from_state(state, rules, atoms), Plan(*parts)
    except Exception:  # a damaged part: the route is built from the rules instead
        return None


def _ids_below(ids: Any, atoms: int) -> bool:
    """Whether ``ids`` is a tuple or frozenset of atom ids below ``atoms`` (by its least and greatest
    member: no loop in Python over the ~120,000 ids of the SigmaHQ corpus)."""
    if not isinstance(ids, tuple | frozenset):
        return False
    try:
        return not ids or (type(min(ids)) is int and min(ids) >= 0 and type(max(ids)) is int and max(ids) < atoms)
    except TypeError:  # something that is no number
        return False


def _check(node: Node, atoms: int) -> None:
    """Raise unless ``node`` is condition IR over atom ids below ``atoms`` (iteratively: no recursion limit)."""
    stack: list[Any] = [node]
    while stack:
        item = stack.pop()
        if not isinstance(item, tuple) or len(item) != 2:
            raise SnapshotError("ruleset snapshot holds a malformed condition")
        op, arg = item
        if op == "atom":
            if type(arg) is not int or not 0 <= arg < atoms:
                raise SnapshotError("ruleset snapshot names an unknown atom")
        elif op == "const":
            if type(arg) is not bool:
                raise SnapshotError("ruleset snapshot holds a malformed condition")
        elif op == "not":
            stack.append(arg)
        elif op in ("and", "or") and isinstance(arg, list):
            stack.extend(arg)
        else:
            raise SnapshotError("ruleset snapshot holds a malformed condition")
