"""The plan format between :mod:`detectors.sigma.screen` and the native screen: its one owner.

The native extension (``detectors/native/src/abi.rs``) mirrors every enum and limit here and
exports its copy (``_native.ABI_VERSION``, ``_native.ABI``); ``tests/unit/detectors/sigma/test_screen_abi.py``
compares the two member by member, both ways. A plan carries :data:`ABI_VERSION` and the
extension refuses a plan of another version (``_native.AbiMismatch``, naming both), so a stale
build cannot misread a plan silently. Change anything here: bump :data:`ABI_VERSION`, change
``abi.rs`` alike and rebuild the extension.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from detectors.errors import DetectorError
from detectors.event import MAX_DEPTH

ABI_VERSION = 4
"""Version of the plan format; the extension accepts this one only."""

STRICT_DEPTH = MAX_DEPTH - 2
"""Nesting beyond which a strict screen (condition programs, special atoms) calls an event
unsure: the Python flattening stops at :data:`~detectors.event.MAX_DEPTH`, kept with a
margin. Passed in the plan (the extension has no copy of its own)."""


class StaleExtension(DetectorError):
    """The loaded extension reads another plan format (or one without a version): rebuild it.
    ``context``: ``extension`` (its version, None before versions) and ``plan`` (ours)."""

    def __init__(self, extension: int | None) -> None:
        built = f"version {extension}" if extension is not None else "no version (built before plans had one)"
        super().__init__(f"detectors._native reads screen plans of {built}, detectors.sigma writes version "
                         f"{ABI_VERSION}: rebuild the extension from detectors/native",
                         extension=extension, plan=ABI_VERSION)


class Op(IntEnum):
    """Operations of a condition program (postfix)."""

    ATOM = 0  # push the truth of atom ``arg``
    CONST = 1  # push ``arg != 0``
    NOT = 2  # negate the top
    AND = 3  # replace the top ``arg`` values by their conjunction
    OR = 4  # ... by their disjunction


class CheckKind(IntEnum):
    """How an indexed atom is confirmed: by its text pattern's shape (``EXACT`` to ``ANY``: the
    one definition of those shapes, :attr:`detectors.sigma.text.Pattern.kind`), an RE2 regex the
    screen runs, a network (``CIDR``), or assumed satisfied."""

    EXACT = 0
    PREFIX = 1
    SUFFIX = 2
    CONTAINS = 3
    GLOB = 4
    ANY = 5
    REGEX = -1
    ASSUME = -2
    CIDR = -3
    """``|cidr``: literal ``"prefix/mask"`` (the IPv4 network as integers); ``flag``: an IPv6
    network (decided only on values that cannot be an IPv6 address)."""


class SpecialKind(IntEnum):
    """Atoms tested on the whole event, from the paths the walk saw."""

    NULL = 0
    EXISTS = 1
    FIELD_REF = 2


class GlobPart(IntEnum):
    """Pieces of a glob pattern (:attr:`detectors.sigma.text.Pattern.glob` is made of these)."""

    LITERAL = 0
    STAR = 1
    ONE = 2


class Instr(NamedTuple):
    op: Op
    arg: int


class ExactKey(NamedTuple):
    """A whole (folded) value and the atoms it decides: outright, or after their check."""

    key: str
    plain: list[int]
    verify: list[int]


class SubstringKey(NamedTuple):
    """A substring key and the atoms it hits anywhere, as a prefix, as a suffix, or to check."""

    text: str
    anywhere: list[int]
    prefix: list[int]
    suffix: list[int]
    verify: list[int]


class FieldPlan(NamedTuple):
    """The atoms of one field (or of keywords): exact keys, atoms checked on every value, keys."""

    exact: list[ExactKey]
    every: list[int]
    keys: list[SubstringKey]


class Check(NamedTuple):
    """An atom's confirmation: literal or regex source, ``flag`` is "cased" for texts and
    "also without a final newline" for regexes."""

    atom: int
    kind: CheckKind
    literal: str
    flag: bool
    glob: list[tuple[GlobPart, str]]


class Special(NamedTuple):
    atom: int
    kind: SpecialKind
    field: str
    other: str
    starts: bool
    ends: bool
    want: bool


class Trigger(NamedTuple):
    """An atom and the positions of the rules whose primary trigger clause holds it."""

    atom: int
    positions: list[int]


class Plan(NamedTuple):
    """The native ``Screen``'s keyword arguments for one route (``Screen(**plan._asdict())``)."""

    fields: list[tuple[str, FieldPlan]]
    keywords: FieldPlan | None
    checks: list[Check]
    triggers: list[Trigger]
    rest: list[list[list[int]]]
    undecided: list[int]
    """Rule positions Python evaluates on every event: without a trigger and without a program,
    or triggered by an atom the screen never reports (a non-empty list: no event is cleared)."""
    programs: list[list[Instr] | None]
    untriggered: list[int]
    """Rule positions without a trigger, whose programs run on every event."""
    special: list[Special]
    displays: list[str]
    """Per atom, the name a match shows it under (:attr:`detectors.sigma.atoms.Atom.display`)."""
    shown: list[list[int] | None]
    """Per rule position, its positive atoms in rule order (:attr:`CompiledRule.positives`), for the
    rules the screen may decide to match (with a program), else None: a decision gives the fields
    their matches show (``make_match``'s), so Python need not flatten the event for them."""
    atom_count: int
    cased_fields: bool = False
    """Keys are compared as spelled (``rules.field_names: sensitive``): the walk does not lower-case
    them, and the plan's field paths are the rules' spellings."""
    strict_depth: int = STRICT_DEPTH
    abi_version: int = ABI_VERSION


def glob_parts(parts: tuple[tuple[int, str], ...]) -> list[tuple[GlobPart, str]]:
    """A text pattern's glob in the plan's terms (raises ValueError on a piece of no known kind)."""
    return [(GlobPart(kind), text) for kind, text in parts]
