"""Differential fuzzing of the native screen against the Python engine.

The screen (``detectors._native``) may clear an event only when the Python path
would not match it: a cleared matching event is a lost alert. This generates
events from rules' own values (the project's rule pack, SigmaHQ, and generated
single-modifier rules over every modifier the engine supports), mutates them
where the two readings of a raw message could part (unicode escapes, duplicate
keys, deep nesting, dotted and nested keys, numbers as strings and strings as
numbers, huge integers, floats near 2^53 and beyond, exponent forms,
NaN/Infinity, BOM, invalid UTF-8, lone surrogates, case folding of non-ASCII keys
and values), and checks every event the screen clears, and the screen's decision on every event it picks (its
``decide``: the rules that match, and those left to Python), against Python:

- ``cleared_match``: the screen cleared an event the engine matches (lost alert);
- ``decided_lost``, ``decided_invented``, ``decided_differs``: a decision that would lose an
  alert, invent one, or make other matches (matched fields included) than the engine does
  (see :func:`judge_decision`); ``scan_decide``: ``scan`` and ``decide`` cleared different events;
- ``shown_malformed``: the fields the screen gave for a match it decided (``shown_matches``
  counts them) are not the engine's, pair by pair, value types included;
- ``cleared_rejected``: it cleared a message the JSON decoder rejects (Python
  dead-letters it; the screen would count it accepted);
- ``time``: a cleared run's event time is not the one the Python path reads.

``tests/unit/detectors/sigma/test_screen_fuzz.py`` runs it briefly; run it longer with::

    python bench/fuzz_screen.py --seconds 300 --seed 1 [--sigmahq ../shared/sigmahq]

Every target is compiled for both ``rules.field_names`` modes (``--field-names`` picks one), and
seeds carry their field in another case too. It prints one JSON object: inputs tried, matching,
cleared, decided, findings (with samples).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import math
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fuzzing import Budget, Findings  # noqa: E402
from detectors.model import LogSource  # noqa: E402
from detectors.sigma import Ruleset, RuleText, compile_ruleset  # noqa: E402
from service.decoders import DecodeError  # noqa: E402
from service.decoders.json import parse_object  # noqa: E402
from service.rules import load_rules  # noqa: E402
from service.sources.base import Item  # noqa: E402
from tests.support.fixtures import pipeline_text  # noqa: E402

TIME_FIELDS = ["@timestamp", "event.created", "time", "UtcTime"]
FALLBACK_MS = 1_700_000_000_123
MAX_BYTES = 1 << 20
MAX_DEPTH = 64
SIGMAHQ_SMALL = ("rules/cloud", "rules/linux", "rules/web", "rules/application")
"""SigmaHQ folders the quick run in the test suite loads (the whole corpus takes ~20 s to parse)."""


@dataclass
class Target:
    """One route of a ruleset, and seed events that match or nearly match its rules."""

    name: str
    ruleset: Ruleset
    logsource: LogSource | None
    seeds: list[dict[str, Any]]


@dataclass
class Report:
    tried: int = 0
    rejected: int = 0
    matching: int = 0
    cleared: int = 0
    decided: int = 0
    """Picked events whose rules the screen decided (all but the ``undecided`` ones)."""
    decided_matching: int = 0
    """... of which some rule was decided to match."""
    undecided_rules: int = 0
    """Rules left to Python over all decided events."""
    corpus_tried: int = 0
    """Inputs on the rule pack's and SigmaHQ's routes (the rest: generated single-modifier rules)."""
    corpus_decided: int = 0
    shown_matches: int = 0
    """Matches whose fields the screen gave (the rest of the decided matches: Python made them)."""
    seconds: float = 0.0
    targets: int = 0
    found: Findings = field(default_factory=Findings)

    @property
    def findings(self) -> Counter[str]:
        return self.found.by_kind

    @property
    def samples(self) -> list[dict[str, Any]]:
        return self.found.samples

    def add(self, kind: str, target: str, raw: bytes, detail: str = "") -> None:
        self.found.add(kind, {"kind": kind, "target": target, "raw": repr(raw[:400]), "detail": detail}, target)

    def as_dict(self) -> dict[str, Any]:
        return {"inputs_tried": self.tried, "python_rejected": self.rejected, "python_matching": self.matching,
                "screen_cleared": self.cleared, "screen_decided": self.decided,
                "decided_matching": self.decided_matching, "undecided_rules": self.undecided_rules,
                "corpus_inputs_tried": self.corpus_tried, "corpus_decided": self.corpus_decided,
                "shown_matches": self.shown_matches,
                "targets": self.targets, "seconds": round(self.seconds, 1),
                "findings": self.found.total, "findings_by_kind": dict(self.found.by_kind),
                "findings_by_target": dict(self.found.by_target.most_common(20)),
                "samples": self.samples}


# --- generated single-modifier rules ----------------------------------------------------------

FIELDS = ["F", "CommandLine", "a.b.c", "Ünïcode", "σοφία", "\u0130d", "user.NAME", "\ua7cbName", "x.\U00010d50k",
          "\u7528\u6237.\u540d\u524d", "\u10a0\u03a3x", "\u0391\u03a3.\u05d0"]
"""Rule field names: ASCII, dotted, Latin-1 and Greek (folded by the screen), dotted I, letters
Python 3.11's Unicode tables do not case but Rust's do, CJK and Hebrew, Georgian, final sigma."""


def _b64(text: str, encoding: str = "utf-8") -> str:
    return base64.b64encode(text.encode(encoding)).decode()


MODIFIERS: list[tuple[str, Any, list[Any]]] = [
    # (modifiers, rule value, example event values: matches and near misses)
    ("", "Evil.EXE", ["evil.exe", "EVIL.EXE", "evil.exe ", "xevil.exe"]),
    ("", 4410201966627823616, [4410201966627823616, "4410201966627823616", 4.4102019666278236e18]),
    ("", 4, [4, 4.0, "4", 40, -4]),
    ("", "1.5", [1.5, "1.5", 1.50, 15e-1]),
    ("", "1e-05", [1e-05, 0.00001, "1e-05", 1.5e-05]),
    ("", "602363986346939.2", [602363986346939.25, 602363986346939.2, 602363986346939.3]),
    ("|contains", "0.30000000000000004", [0.1 + 0.2, 0.3, 10.300000000000004]),
    ("", 9007199254740993, [9007199254740993, 9007199254740992, "9007199254740993"]),
    ("", str(int(1e308)), [1e308, int(1e308), 1.0000000000000001e308, 9.999999999999999e307]),
    ("", str(2 ** 64), [2 ** 64, float(2 ** 64), 2 ** 64 - 1, 2 ** 64 + 1]),
    ("", True, [True, "TRUE", "true", False, 1]),
    ("", None, [None, "", "null"]),
    ("", "", ["", " ", None]),
    ("", "caf\u00e9 \u03c3\u03bf\u03c6\u03af\u03b1\u03c2", ["CAF\u00c9 \u03a3\u039f\u03a6\u038a\u0391\u03a3", "caf\u00e9"]),
    ("", "\ua7cbx", ["\ua7cbX", "\u0264x"]),
    ("", "k", ["K", "\u212a", "k"]),
    ("|contains", "\u7ba1\u7406", ["\u65e5\u672c \u7ba1\u7406\u8005", "\u7ba1 \u7406", "\u05d0\u7ba1\u7406"]),
    ("|contains", "\u03b1\u03c2", ["\u0391\u03a3", "\u0391\u03a3\ua7cd", "\u0391\u03a3 \u65e5", "\u0391\u03a3\u1c8a"]),
    ("|endswith", "\u2d00", ["\u10a0", "\u1c90", "x\u2d00"]),
    ("", "\u24d0\u2170", ["\u24b6\u2160", "\u24d0\u2170"]),
    ("", "Evil*.exe", ["evil-x.exe", "EVIL.EXE", "evil\n.exe"]),
    ("", "ev?l", ["evil", "ev\u00e4l", "evl"]),
    ("|contains", "-enc ", ["powershell -ENC x", "-encoded", "\u0130-enc "]),
    ("|startswith", "/admin", ["/ADMIN/x", "/x/admin"]),
    ("|endswith", ".php", ["a.PHP", "a.php?x"]),
    ("|cased", "AbC", ["AbC", "abc"]),
    ("|contains|cased", "Evil", ["an Evil x", "an evil x"]),
    ("|startswith|cased", "Ab", ["Abz", "abz"]),
    ("|endswith|cased", "Ab", ["zAb", "zab"]),
    ("|contains|all", ["/c", "whoami"], ["cmd /c whoami", "cmd /c dir"]),
    ("|exists", True, ["x", None, {"a": 1}, []]),
    ("|exists", False, ["x", None]),
    ("|neq", "x", ["x", "y", ["y", "x"], 3]),
    ("|neq", 4, [4, 5, "4"]),
    ("|windash|contains", " -exec ", ["tool /exec x", "tool \u2013exec x", "tool +exec x"]),
    ("|re", "^ab+c$", ["abbbc", "ABC", "abc\n"]),
    ("|re", "a\\Sb", ["a\x0bb", "acb", "a b"]),
    ("|re", "^\\w+$", ["\u00e4", "ab", "a b"]),
    ("|re|i", "ABC", ["xabcx", "xyz"]),
    ("|re|m", "^b$", ["a\nb\nc", "ab"]),
    ("|re|s", "a.b", ["a\nb", "ab"]),
    ("|re", "^46[0-9]{2}$", [4688, "4688", 46880]),
    ("|base64", "secret", [_b64("secret"), "secret"]),
    ("|base64offset|contains", "http://evil", [_b64("x http://evil tail"), _b64("http://good")]),
    ("|wide|base64offset|contains", "Invoke", ["-enc " + _b64("IE Invoke now", "utf-16-le")]),
    ("|utf16le|base64", "ping", [_b64("ping", "utf-16-le")]),
    ("|utf16be|base64", "ping", [_b64("ping", "utf-16-be")]),
    ("|utf16|base64", "ping", [base64.b64encode(b"\xff\xfe" + "ping".encode("utf-16-le")).decode()]),
    ("|lt", 10, [9, 10, "9", True]),
    ("|lte", 10, [10, 11, 9.99]),
    ("|gt", 1.5, [1.6, 1.5, "2"]),
    ("|gte", 10, [10, 9, "1e1"]),
    ("|hour", 13, ["2024-05-07T13:22:41Z", 1715088161, 1715088161000, "x"]),
    ("|minute", 22, ["2024-05-07T13:22:41Z"]),
    ("|day", 7, ["2024-05-07T13:22:41Z"]),
    ("|week", 19, ["2024-05-07T13:22:41Z"]),
    ("|month", 5, ["2024-05-07T13:22:41Z"]),
    ("|year", 2024, ["2024-05-07T13:22:41Z"]),
    ("|cidr", "10.0.0.0/8", ["10.1.2.3", "11.1.2.3", "::ffff:a00:1", "010.1.2.3", " 10.1.2.3", "10.1.2.3\n",
                             "10.1.2", "10.1.2.256", "10.1.2.3.4", "10.1.2.3/8", "10.1.2.3%x", 167837955, "10.1.2.3\u00a0",
                             "\u0661" + "0.1.2.3", "10.255.255.255", "9.255.255.255", ["x", "10.0.0.1"]]),
    ("|cidr", "192.168.1.0/24", ["192.168.1.7", "192.168.2.7", "192.168.1.07", "192.168.001.7"]),
    ("|cidr", "fe80::/10", ["fe80::1", "FE80::1%eth0", "::1", "10.1.2.3", "fe80:0:0:0:0:0:0:1", " fe80::1",
                            "febf:ffff::", "fec0::1", "fe80::10.1.2.3"]),
    ("|cidr", "::1/128", ["::1", "0:0:0:0:0:0:0:1", "::2", "-", "127.0.0.1"]),
    ("|fieldref", "Other", ["same"]),
    ("|fieldref|startswith", "Other", ["same-rest"]),
    ("|fieldref|endswith", "Other", ["rest-same"]),
    ("|fieldref|contains", "Other", ["xxsamexx"]),
    ("|neq|fieldref", "Other", ["same", "other"]),
    ("|expand", "%admins%", ["alice", "ALICE", "bobby", "carol"]),
    ("|expand|contains", "%admins%", ["x alice y", "carol"]),
]

EXPAND_PIPELINE = pipeline_text("admins_placeholder")
"""Values of the ``%admins%`` placeholder, for the ``expand`` modifier."""

_ids = iter(range(1, 1 << 40))


def _rule(detection: dict[str, Any]) -> str:
    return yaml.safe_dump({"title": "fuzz", "id": f"00000000-0000-4000-8000-{next(_ids):012d}",
                           "logsource": {"product": "fuzz"}, "detection": detection},
                          sort_keys=False, allow_unicode=True)


GENERATED = LogSource(product="fuzz")
"""The log source of the generated rules."""


def generated_targets(rng: random.Random, cased_fields: bool = False) -> list[Target]:
    """A ruleset per modifier, field name and condition form (``sel``, ``not sel``, with a keyword
    or a second selection); seeds are the modifier's example values at that field, and the same
    spelled in another case. ``cased_fields``: compiled for ``rules.field_names: sensitive``."""
    out: list[Target] = []
    logsource = GENERATED
    for mods, value, examples in MODIFIERS:
        for name in rng.sample(FIELDS, 3):
            sel = {f"{name}{mods}": value}
            forms: list[dict[str, Any]] = [
                {"sel": sel, "condition": "sel"},
                {"sel": sel, "condition": "not sel"},
                {"sel": sel, "other": {"x": "y"}, "condition": "sel and not other"},
                {"sel": sel, "kw": ["mimikatz"], "condition": "sel or kw"},
            ]
            for detection in forms:
                result = compile_ruleset([RuleText("fuzz.yml", _rule(detection), "fuzz")],
                                         pipelines=[EXPAND_PIPELINE] if "expand" in mods else [],
                                         cased_fields=cased_fields)
                if result.errors or not result.ruleset.rules:
                    continue
                seeds = [{name: example, "Other": rng.choice(["same", "SAME", "x"])} for example in examples]
                seeds += [{name: example} for example in examples] + [{}, {"x": "y", name: examples[0]}]
                twin = _other_case(name)  # the same field in another spelling, alone and beside it
                seeds += [{twin: examples[0], "other": "same"}, {name: examples[-1], twin: examples[0]},
                          {twin: examples[-1], name: examples[0], "X": "y"}]
                mode = " (cased)" if cased_fields else ""
                out.append(Target(f"{name}{mods} {detection['condition']}{mode}", result.ruleset, logsource, seeds))
    return out


def _other_case(name: str) -> str:
    """``name`` with the case of its letters changed (lower-cased when that changes nothing)."""
    swapped = name.swapcase()
    return swapped if swapped != name else name.upper() if name.upper() != name else name + "X"


# --- corpus rules -------------------------------------------------------------------------------


def corpus_targets(folders: Sequence[Path], max_events: int = 12, cased_fields: bool = False) -> list[Target]:
    """The rule pack and SigmaHQ folders: one target per log source (its rules' own events), and
    the all-rules route of the rule pack (``cased_fields``: compiled for ``rules.field_names: sensitive``)."""
    from sigma.exceptions import SigmaError

    from tests.conformance.differential import corpus_files, parse_rules
    from tests.conformance.eventgen_sigma import rule_events

    # the site values the conformance suite gives SigmaHQ's ``expand`` placeholders
    loaded = load_rules(list(folders), [ROOT / "tests" / "conformance" / "site_placeholders.yml"],
                        cased_fields=cased_fields)
    parsed = []
    for file in (file for folder in folders for file in corpus_files(folder)):
        try:
            parsed += parse_rules([file])
        except SigmaError:  # correlations referring to rules of other files
            continue
    grouped: dict[LogSource, list[dict[str, Any]]] = defaultdict(list)
    chosen = {str(rule.id) for rule in loaded.ruleset.rules}
    for _, rule in parsed:
        if str(rule.id) not in chosen:
            continue
        ls = rule.logsource
        try:
            events = rule_events(rule, max_events)
        except AttributeError:  # the conformance generator's gap (``exists`` values): seed with the rest
            continue
        grouped[LogSource(ls.product, ls.category, ls.service)].extend(events)
    mode = " (cased)" if cased_fields else ""
    targets = [Target(f"{ls.product}/{ls.category}/{ls.service}{mode}", loaded.ruleset, ls, seeds)
               for ls, seeds in grouped.items()]
    pack = [folder for folder in folders if folder.resolve() == (ROOT / "sigma-rules").resolve()]
    if pack:
        pack_rules = load_rules(pack, cased_fields=cased_fields).ruleset
        events = [event for ls, seeds in grouped.items() for event in seeds]
        targets.append(Target(f"sigma-rules (all rules){mode}", pack_rules, None, events))
    return targets


# --- mutation -------------------------------------------------------------------------------------


class Raw:
    """A JSON token written verbatim (a number spelling, NaN, a broken escape)."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


ODD_CHARS = ["\u00e9", "\u00c9", "\u03a3", "\u03c2", "\u0130", "\u0131", "\u017f", "\u212a", "\u1e9e", "\u00df",
             "\u0345", "\ua7cb", "\U00010d50", "\u1c89", "\u65e5", "\u0590", "\u058f", "\x0b", "\n", "\u2028",
             "\U0001f600", "\ufeff", "\u0000", "\u0301", "\ua7cd", "\u1c8a", "\u05d0", "\u0627", "\u10a0", "\u1c90",
             "\U00010400", "\u2160", "\u24b6", "\uff21", "\U0001e900", "\u03a3", "\u1f88", "\ufb00"]
"""Characters whose case folding, width or handling differ somewhere (Kelvin sign, final sigma,
dotted I, long s, capital sharp s, combining marks, Unicode 15+ letters, controls, astral)."""

NUMBER_SPELLINGS: list[Callable[[float], str]] = [
    repr, lambda v: f"{v:.17g}", lambda v: f"{v:.17e}", lambda v: f"{v:.20e}", lambda v: f"{v:.16E}",
    lambda v: f"{v:.25g}",
]

LONG_NUMBERS = [b"1" + b"0" * 400, b"-" + b"9" * 320, b"0." + b"0" * 400 + b"1", b"1" + b"0" * 308 + b".5",
                b"179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587"
                b"207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711"
                b"531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093"
                b"042880177904174497792", b"2.4703282292062327e-324", b"2.4703282292062328e-324"]
"""Numbers at the limits of a double: overflow (Python rejects them), rounding to the largest double
or to zero, halfway cases."""


SPECIAL_NUMBERS = [
    "9007199254740993", "9007199254740993.0", "9.007199254740993e15", "9007199254740992.5",
    "18446744073709551615", "18446744073709551616", "-9223372036854775808", "-9223372036854775809",
    "100000000000000000000000000000000000001", "4.4102019666278236e+18", "4410201966627823616.0",
    "9.2e18", "9.223372036854775807e18", "1e16", "1e23", "1.7976931348623157e308", "2.2250738585072014e-308",
    "5e-324", "1e-400", "1e400", "-0", "-0.0", "0e0", "0.1e1", "1.0", "1E2", "1e-05", "0.0001", "123456789012345678",
    "NaN", "Infinity", "-Infinity", "01", "1.", ".5", "+1",
    *(token.decode() for token in LONG_NUMBERS),
]


def number_tokens(value: int | float, rng: random.Random) -> str:
    """Another spelling of a JSON number (exponent forms, trailing zeros, float near integers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    choice = rng.randrange(6)
    if choice == 0 and isinstance(value, int):
        return f"{value}.0" if rng.random() < 0.5 else f"{value}e0"
    if choice == 1 and isinstance(value, int) and value:
        digits = str(abs(value))
        sign = "-" if value < 0 else ""
        return f"{sign}{digits[0]}.{digits[1:] or '0'}e{len(digits) - 1}"
    if choice == 2:
        return rng.choice(SPECIAL_NUMBERS)
    try:
        as_float = float(value)
    except OverflowError:
        return str(value)
    if not math.isfinite(as_float):
        return str(value)
    return rng.choice(NUMBER_SPELLINGS)(as_float)


def _escape_char(char: str) -> str:
    code = ord(char)
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04X}"
    return f"\\u{code:04x}"


def write_string(text: str, rng: random.Random, escapes: float) -> str:
    out = ['"']
    for char in text:
        if char in '"\\' or ord(char) < 0x20:
            out.append(_escape_char(char) if rng.random() < 0.5 or ord(char) < 0x20 else "\\" + char)
        elif rng.random() < escapes:
            out.append(_escape_char(char) if rng.random() < 0.9 or char != "/" else "\\/")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def write(value: Any, rng: random.Random, escapes: float, duplicates: float) -> str:
    """JSON text of ``value`` with random escapes, number spellings and duplicated keys."""
    if isinstance(value, Raw):
        return value.token
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if rng.random() < 0.3:
            return number_tokens(value, rng)
        return orjson.dumps(value).decode() if not isinstance(value, int) or abs(value) < 1 << 63 else str(value)
    if isinstance(value, str):
        return write_string(value, rng, escapes)
    if isinstance(value, list | tuple):
        return "[" + ",".join(write(v, rng, escapes, duplicates) for v in value) + "]"
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            entry = f"{write_string(str(key), rng, escapes)}:{write(item, rng, escapes, duplicates)}"
            if rng.random() < duplicates:
                other = write(mutate_value(item, rng), rng, escapes, duplicates)
                twin = f"{write_string(str(key), rng, escapes)}:{other}"
                parts.extend([twin, entry] if rng.random() < 0.5 else [entry, twin])
            else:
                parts.append(entry)
        space = rng.choice(["", " ", "\n", "\t", "\r\n "])
        return "{" + space + ("," + space).join(parts) + space + "}"
    return write_string(str(value), rng, escapes)


def _vary_text(text: str, rng: random.Random) -> str:
    choice = rng.randrange(9)
    if choice == 0:
        return text.upper()
    if choice == 1:
        return text.swapcase()
    if choice == 2 and text:
        at = rng.randrange(len(text) + 1)
        return text[:at] + rng.choice(ODD_CHARS) + text[at:]
    if choice == 3:
        return rng.choice(["", " ", "x"]) + text + rng.choice(["", "\n", " ", "x"])
    if choice == 4 and text:
        at = rng.randrange(len(text))
        return text[:at] + text[at + 1:]
    if choice == 5:
        return "".join(rng.choice([c.upper(), c.lower(), c]) for c in text)
    if choice == 6:
        swaps = {"k": "\u212a", "K": "\u212a", "s": "\u017f", "i": "\u0130", "I": "\u0131", "ss": "\u1e9e"}
        old = rng.choice(list(swaps))
        return text.replace(old, swaps[old])
    return text


def mutate_value(value: Any, rng: random.Random) -> Any:
    choice = rng.randrange(12)
    if isinstance(value, str):
        if choice < 5:
            return _vary_text(value, rng)
        if choice == 5 and value.strip().lstrip("-").isdigit():
            return Raw(number_tokens(int(value), rng))
        if choice == 6:
            try:
                return Raw(number_tokens(float(value), rng))
            except ValueError:
                return value
    elif isinstance(value, bool) or value is None:
        if choice < 3:
            return rng.choice([True, False, None, "true", "FALSE", 1, 0, "null"])
    elif isinstance(value, int | float):
        if choice < 4:
            return Raw(number_tokens(value, rng))
        if choice == 4:
            return str(value) if rng.random() < 0.5 else repr(float(value)) if abs(value) < 1e300 else value
        if choice == 5 and isinstance(value, int):
            return value + rng.choice([-1, 1, 1 << 53, 1 << 64, -(1 << 64)])
    elif isinstance(value, dict):
        return mutate_event(value, rng, depth=1)
    elif isinstance(value, list):
        return [mutate_value(v, rng) for v in value]
    if choice == 9:
        return [value, mutate_value(value, rng)] if rng.random() < 0.5 else [[value]]
    if choice == 10:
        return rng.choice([None, {}, [], {"x": value}, Raw(rng.choice(SPECIAL_NUMBERS))])
    return value


def _vary_key(key: str, rng: random.Random) -> str:
    choice = rng.randrange(6)
    if choice == 0:
        return key.upper()
    if choice == 1:
        return key.lower()
    if choice == 2:
        return _vary_text(key, rng)
    if choice == 3 and key:
        at = rng.randrange(len(key) + 1)
        return key[:at] + rng.choice(ODD_CHARS[:16]) + key[at:]
    return key


def _nest(key: str, value: Any, rng: random.Random) -> tuple[str, Any]:
    """Dotted key as (partly) nested objects, or the key unchanged."""
    if "." not in key:
        return key, value
    parts = key.split(".")
    cut = rng.randrange(1, len(parts))
    return ".".join(parts[:cut]), {".".join(parts[cut:]): value}


def mutate_event(event: dict[str, Any], rng: random.Random, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in event.items():
        if rng.random() < 0.5:
            value = mutate_value(value, rng)
        if rng.random() < 0.3:
            key = _vary_key(key, rng)
        if rng.random() < 0.3:
            key, value = _nest(key, value, rng)
        if isinstance(value, dict) and rng.random() < 0.3 and depth < 3:
            # flatten one level: {"a": {"b": x}} -> {"a.b": x}
            for inner, item in value.items():
                out[f"{key}.{inner}"] = item
            continue
        out[key] = value
    if depth == 0 and rng.random() < 0.3:
        name = rng.choice(TIME_FIELDS)
        value = time_value(rng)
        if "." in name and rng.random() < 0.5:
            name, value = _nest(name, value, rng)
        out[name] = value
    if depth == 0 and rng.random() < 0.2:
        out = _echo(out, rng)
    if depth == 0 and rng.random() < 0.1:
        keys = list(out)
        rng.shuffle(keys)
        out = {k: out[k] for k in keys}
    return out


def _echo(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The event with some of its values again where the order Python finds values in is not
    the order of the message (matched fields show the first value): a sibling key spelled in
    another case, a list of objects repeating a path, a key before all others."""
    values = [v for v in event.values() if not isinstance(v, (dict, list))] or ["x"]
    pick = lambda: mutate_value(rng.choice(values), rng) if rng.random() < 0.5 else rng.choice(values)  # noqa: E731
    choice = rng.randrange(4)
    if choice == 0 and event:
        key = rng.choice(list(event))
        return {**event, key.swapcase() if key.swapcase() != key else key.upper() + "x": pick()}
    if choice == 1:
        name = rng.choice(list(event) or ["m"])
        return {**event, "echo": [{name: pick()}, {"other": pick()}, {name: pick()}]}
    if choice == 2 and event:
        key = rng.choice(list(event))
        return {key.lower() + ".x": pick(), **event} if rng.random() < 0.5 else {"first": pick(), **event}
    return {**event, "list": [pick(), {"inner": pick()}, pick()]}


def time_value(rng: random.Random) -> Any:
    """An event time in the shapes the screen reads itself and in others it must leave to Python."""
    choice = rng.randrange(6)
    if choice == 0:
        return rng.choice([1764064800, 1764064800123, 1764064800.25, 0, -1, 1e11, 1e11 + 1, 253402300799,
                           253402300800, 253402300799999, 2 ** 63, True, None, "x", {"t": 1}, [1764064800]])
    if choice == 1:
        return rng.randrange(0, 1 << 50) / rng.choice([1, 1000, 7])
    if choice == 2:
        return Raw(rng.choice([*SPECIAL_NUMBERS, "1764064800123.4567", "1.7640648001234567e12", "1764064800e0"]))
    year = rng.choice([1, 1969, 1970, 2000, 2024, 2026, 9999, 10000])
    month, day = rng.choice([(2, 29), (2, 28), (12, 31), (1, 1), (4, 31), (13, 1), (rng.randrange(1, 13), 15)])
    hour, minute, second = rng.choice([(0, 0, 0), (23, 59, 59), (24, 0, 0), (12, 60, 0), (10, 0, 61)])
    fraction = rng.choice(["", ".1", ".123", ".123456", ".1234567", ".", ".12a"])
    zone = rng.choice(["", "Z", "z", "+05:30", "-05:30", "+24:00", "+0530", " UTC", "+05:30:00"])
    separator = rng.choice(["T", " ", "t", "_"])
    text = f"{year:04d}-{month:02d}-{day:02d}{separator}{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"
    return rng.choice([text, f" {text}", f"{text} ", text.replace("-", "/", 1), text[:10], str(rng.randrange(1 << 41))])


def _deepen(text: str, rng: random.Random) -> str:
    levels = rng.choice([20, 30, 31, 32, 33, 40, 62, 63, 64, 65])
    inner = text
    for i in range(levels):
        inner = f'{{"d{i % 3}":{inner}}}' if rng.random() < 0.8 else f"[{inner}]"
    return f'{{"deep":{inner},' + text[1:] if text.startswith("{") and text != "{}" else inner


def raw_message(event: dict[str, Any], rng: random.Random) -> bytes:
    """The mutated event as raw bytes, sometimes broken at the byte level."""
    escapes = rng.choice([0.0, 0.0, 0.05, 0.5, 1.0])
    duplicates = rng.choice([0.0, 0.0, 0.1, 0.5])
    text = write(mutate_event(event, rng), rng, escapes, duplicates)
    choice = rng.randrange(40)
    if choice == 0:
        text = _deepen(text, rng)
    data = text.encode("utf-8", "surrogatepass")
    if choice == 1:
        return b"\xef\xbb\xbf" + data
    if choice == 2 and b'"' in data:
        quotes = [i for i, byte in enumerate(data) if byte == 0x22]
        at = rng.choice(quotes)
        return data[:at + 1] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"]) \
            + data[at + 1:]
    if choice == 3 and b'":"' in data:
        at = data.index(b'":"') + 3
        return data[:at] + rng.choice([b"\\ud800", b"\\udc00x", b"\\ud83d\\u0041", b"\\uZZZZ"]) + data[at:]
    if choice == 4:
        return data + rng.choice([b" ", b"\n", b"x", b"{}", b"\x00", b"\r\n\t "])
    if choice == 5 and len(data) > 2:
        return data[:rng.randrange(1, len(data))]
    if choice == 6:
        return rng.choice([b" ", b"\n", b"\t"]) + data
    if choice == 7 and b'"' in data:
        # a lone surrogate or a broken escape in a key or value
        quotes = [i for i, byte in enumerate(data) if byte == 0x22]
        at = rng.choice(quotes) + 1
        return data[:at] + rng.choice([b"\\ud800", b"\\udfff", b"\\ud800\\ud800", b"\\u12", b"\\x41",
                                       b"\\U0001F600", b"\\'"]) + data[at:]
    if choice == 8:
        # what other JSON readers accept: trailing commas, comments, single quotes, other literals
        old, new = rng.choice([(b"}", b",}"), (b"]", b",]"), (b"{", b"{/*c*/"), (b'"', b"'"), (b"true", b"True"),
                               (b"null", b"None"), (b":", b" : "), (b",", b"\x0c,"), (b"0", b"0x0")])
        return data.replace(old, new, 1)
    if choice == 9:
        return data.replace(b"}", b', "n": ' + rng.choice(LONG_NUMBERS) + b"}", 1)
    return data


# --- the differential check -----------------------------------------------------------------------


def _python(raw: bytes, max_depth: int, max_bytes: int) -> dict[str, Any] | None:
    try:
        return parse_object(raw, max_depth, max_bytes)
    except DecodeError:
        return None


LIMITS = [(MAX_DEPTH, MAX_BYTES)] * 6 + [(1, MAX_BYTES), (8, MAX_BYTES), (31, 300), (200, MAX_BYTES)]
"""The JSON decoder's (max_depth, max_bytes): the defaults mostly, and others a deployment may set."""


def check(target: Target, raws: list[bytes], report: Report, max_depth: int = MAX_DEPTH,
          max_bytes: int = MAX_BYTES) -> None:
    """Screen ``raws`` as one batch (the value cache carries over), deciding their rules, and judge
    every event: a cleared one, and the decision on a picked one, against the Python engine."""
    screen = target.ruleset.screen(target.logsource)
    if screen is None:
        return
    fallbacks = [FALLBACK_MS] * len(raws)
    picked, latest, decisions = screen.decide(raws, fallbacks, TIME_FIELDS, max_bytes, max_depth)
    scanned = screen.scan(raws, fallbacks, TIME_FIELDS, max_bytes, max_depth)
    if scanned[0] != picked or repr(scanned[1]) != repr(latest):
        report.add("scan_decide", target.name, b"", f"scan picked {scanned[0]}, decide picked {picked}")
    decision_at = dict(zip(picked, decisions, strict=True))
    run, run_times = 0, [math.nan] * (len(picked) + 1)
    judged = [True] * (len(picked) + 1)  # runs whose every cleared event has a Python time
    corpus = target.logsource != GENERATED
    report.corpus_tried += len(raws) if corpus else 0
    for position, raw in enumerate(raws):
        report.tried += 1
        event = _python(raw, max_depth, max_bytes)
        report.rejected += event is None
        matches = target.ruleset.evaluate(event, target.logsource) if event is not None else []
        report.matching += bool(matches)
        if position in decision_at:
            run += 1
            decision = decision_at[position]
            if decision is not None and event is not None:
                judge_decision(target, screen.rules, decision, event, matches, raw, report)
                report.corpus_decided += corpus
            continue
        report.cleared += 1
        if event is None:
            report.add("cleared_rejected", target.name, raw)
            judged[run] = False
            continue
        if matches:
            report.add("cleared_match", target.name, raw, ", ".join(m.rule.title for m in matches))
            judged[run] = False
            continue
        ts = Item(event, ("t", 0, 0), target.logsource, tuple(TIME_FIELDS), FALLBACK_MS / 1000.0).time()
        if math.isnan(run_times[run]) or ts > run_times[run]:
            run_times[run] = ts
    for run, (want, got) in enumerate(zip(run_times, latest, strict=True)):
        if judged[run] and not (want == got or (math.isnan(want) and math.isnan(got))):
            report.add("time", target.name, b"", f"run {run}: screen {got} != Python {want}")


def same_fields(shown: Any, python: tuple[tuple[str, Any], ...]) -> bool:
    """Whether shown fields are the engine's exactly: the same pairs in the same order, each value
    of the same type (``True == 1 == 1.0`` would hide a wrong one) and text."""
    if type(shown) is not tuple or len(shown) != len(python):
        return False
    for pair, want in zip(shown, python, strict=True):
        if type(pair) is not tuple or len(pair) != 2 or type(pair[0]) is not str or pair[0] != want[0]:
            return False
        if type(pair[1]) is not type(want[1]) or repr(pair[1]) != repr(want[1]):
            return False
    return True


def judge_decision(target: Target, rules: Sequence[Any], decision: Any,
                   event: dict[str, Any], matches: list[Any], raw: bytes, report: Report) -> None:
    """A picked event's decision against the Python engine's matches (``matches``):

    - ``decided_lost``: a rule Python matches is decided not to match (a lost alert);
    - ``decided_invented``: a rule decided to match does not match in Python (an invented alert);
    - ``decided_differs``: the matches made from the decision (the engine's ``evaluate_decided``)
      are not Python's, matched fields included;
    - ``shown_malformed``: the fields the decision shows for a matched rule are not those of the
      engine's match (see :func:`same_fields`).
    """
    matched, undecided = decision[0], decision[1]
    report.decided += 1
    report.decided_matching += bool(matched)
    report.undecided_rules += len(undecided)
    said = {id(rules[p].info) for p in matched}
    open_ = said | {id(rules[p].info) for p in undecided}
    python = {id(m.rule) for m in matches}
    lost = [m.rule.title for m in matches if id(m.rule) not in open_]
    if lost:
        report.add("decided_lost", target.name, raw, ", ".join(lost))
    invented = [rules[p].info.title for p in matched if id(rules[p].info) not in python]
    if invented:
        report.add("decided_invented", target.name, raw, ", ".join(invented))
    if len(decision) > 2:
        by_rule = {id(m.rule): m for m in matches}
        for position, fields in zip(matched, decision[2], strict=True):
            if fields is None:
                continue
            report.shown_matches += 1
            match = by_rule.get(id(rules[position].info))
            if match is not None and not same_fields(fields, match.fields):
                report.add("shown_malformed", target.name, raw,
                           f"{rules[position].info.title}: shown {fields!r} != Python {match.fields!r}"[:600])
    made = target.ruleset.evaluate_decided(event, rules, decision, target.logsource)
    if made != matches:
        report.add("decided_differs", target.name, raw, f"decided {made!r} != Python {matches!r}"[:600])


def run(targets: Sequence[Target], seconds: float, seed: int, max_inputs: int | None = None,
        batch: int = 32) -> Report:
    """Mutate the targets' seeds round-robin until the time or input budget is spent."""
    rng = random.Random(seed)
    report = Report(targets=len(targets))
    budget = Budget(seconds, max_inputs)
    usable = itertools.cycle([t for t in targets if t.seeds])

    def step() -> int:
        target = next(usable)
        raws = [raw_message(rng.choice(target.seeds), rng) for _ in range(batch)]
        check(target, raws, report, *rng.choice(LIMITS))
        return len(raws)

    if any(t.seeds for t in targets):
        budget.run(step)
    report.seconds = budget.elapsed
    return report


def all_targets(sigmahq: Path | None, folders: Iterable[str] = SIGMAHQ_SMALL, seed: int = 0,
                modes: Sequence[bool] = (False, True)) -> list[Target]:
    """Generated and corpus targets, compiled for each ``rules.field_names`` mode in ``modes``
    (False: insensitive, True: sensitive)."""
    corpus = [ROOT / "sigma-rules"]
    if sigmahq is not None:
        corpus += [sigmahq / folder for folder in folders if (sigmahq / folder).is_dir()]
    return [target for cased in modes
            for target in generated_targets(random.Random(seed), cased) + corpus_targets(corpus, cased_fields=cased)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sigmahq", type=Path, default=ROOT.parent / "shared" / "sigmahq",
                        help="SigmaHQ checkout (skipped when absent)")
    parser.add_argument("--field-names", choices=("both", "insensitive", "sensitive"), default="both",
                        help="rules.field_names modes to compile the targets for (default: both)")
    parser.add_argument("--whole-corpus", action="store_true",
                        help="every SigmaHQ rule folder, not only the small set of the test suite")
    args = parser.parse_args(argv)
    from detectors.sigma.screen import AVAILABLE

    if not AVAILABLE:
        print(json.dumps({"error": "the native screen is not built"}))
        return 2
    sigmahq = args.sigmahq if args.sigmahq.is_dir() else None
    folders = ("rules", "rules-emerging-threats", "rules-threat-hunting", "rules-compliance", "rules-dfir") \
        if args.whole_corpus else SIGMAHQ_SMALL
    loading = time.perf_counter()
    modes = {"both": (False, True), "insensitive": (False,), "sensitive": (True,)}[args.field_names]
    targets = all_targets(sigmahq, folders, args.seed, modes)
    loaded = time.perf_counter() - loading
    report = run(targets, args.seconds, args.seed)
    out = {"seed": args.seed, "sigmahq": str(sigmahq) if sigmahq else None, "whole_corpus": args.whole_corpus,
           "field_names": args.field_names,
           "load_seconds": round(loaded, 1), **report.as_dict()}
    print(json.dumps(out, indent=2, ensure_ascii=True))
    return 1 if report.findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
