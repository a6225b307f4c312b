"""Structurally plausible-but-wrong inputs for the hostile-input fuzz tests and ``bench/fuzz_inputs.py``.

Valid documents (a SARIF report, a Sigma rule, a config file, ...) are mutated at one or more
paths: a wrong type, a missing key, a huge number, deep nesting, odd unicode; texts are mutated
by splicing in YAML and syslog syntax. Each target below names its seeds and what it accepts as
an answer: a value, or only its documented error type.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import yaml
from hypothesis import strategies as st

DEEP_DEPTH = 120

HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, 2**63, -(2**63) - 1, 2**70, 1e308, -1e308, "", "x", "-", "0",
    "2023-02-30", "NaN", "\u202e\u0000\ufeff\U0001f4a9", "a" * 10_000, [], {}, [None], [[]], {"": {}},
    ["x"] * 1000, {"k": "v"}, [{"id": 1}], [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]],
]
"""Replacement values: every JSON type, range edges, empties, big and odd ones."""


def deep(depth: int = DEEP_DEPTH) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"d": value}
    return value


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``doc`` (dict keys and list indexes), the root included."""
    out = [prefix]
    if len(prefix) > 40:  # deep enough: mutations below here say nothing new
        return out
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.extend(paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc[:50]):
            out.extend(paths(value, (*prefix, index)))
    return out


def _set(doc: Any, path: tuple[Any, ...], op: str, value: Any) -> Any:
    if not path:
        return value if op != "delete" else None
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "wrap":
        parent[last] = [parent[last]]
    elif op == "stringify":
        parent[last] = str(parent[last])
    elif op == "rename" and isinstance(parent, dict):
        parent[str(last) + "\u0301"] = parent.pop(last)
    elif op == "intkey" and isinstance(parent, dict):
        parent[len(parent)] = parent.pop(last)
    else:
        parent[last] = value
    return doc


@st.composite
def mutated(draw: st.DrawFn, seeds: list[Any], max_mutations: int = 3) -> Any:
    """A deep copy of one seed with 1..``max_mutations`` mutations at random paths."""
    doc = copy.deepcopy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, max_mutations))):
        where = paths(doc)
        path = draw(st.sampled_from(where))
        op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "wrap", "stringify", "rename",
                                   "intkey", "deep"]))
        value = deep() if op == "deep" else copy.deepcopy(draw(st.sampled_from(HOSTILE_VALUES)))
        doc = _set(doc, path, op if op != "deep" else "replace", value)
    return doc


def json_bytes(doc: Any) -> bytes:
    try:
        return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):  # over orjson's own depth or int range: still an input
        return repr(doc).encode()


YAML_SPLICES = [
    "&a [*a]", "*nowhere", "!!python/object:os.system x", "!!binary @@", "{", "]", ": :", "- - -", "\t",
    "'unterminated", "2023-02-30", "0x_", "!!int x", "!!float x", "? [a, b]\n: c", "<<: *x", "%YAML 9.9\n---",
    "&b [x, x, x, x, x, x, x, x, x, x]", "[*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]", "\ufeff", "\x00", "---",
    "[" * 200, "{a: " * 100, "~", "null", ".inf", "-.nan", "\ud800", "\x85", "\u2028",
]
"""Fragments spliced into YAML texts: aliases, tags, syntax errors, bad dates, nesting."""


@st.composite
def spliced_text(draw: st.DrawFn, seeds: list[str], fragments: list[str]) -> str:
    """A seed text with fragments inserted (or a slice removed) at random offsets."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.sampled_from(fragments)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
    return text


def alias_bomb(levels: int, width: int, key: str = "x") -> str:
    """``width ** levels`` nodes in a few hundred bytes."""
    lines = [f"{key}0: &a0 [" + ",".join(["lol"] * width) + "]"]
    lines += [f"{key}{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def yaml_text(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    except (yaml.YAMLError, RecursionError, ValueError):
        return repr(doc)


SYSLOG_SEEDS = [
    b"<34>1 2026-01-02T03:04:05.123Z host app 123 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"App\"] msg",
    b"<13>Jan  2 03:04:05 host sshd[42]: Failed password for root",
    b"<191>1 - - - - - -",
    b'{"message": "curl | sh", "@timestamp": "2026-01-02T03:04:05Z", "n": {"m": [1, 2]}}',
    b'{"a": 1}\n{"b": 2}\n',
    b"2026-01-02 03:04:05 ERROR build failed: step=compile",
]
BYTE_SPLICES = [b"[", b"]", b"\"", b"\\", b"=", b"<", b">", b"999>", b"<-1>", b"\xff\xfe", b"\x00", b"\n",
                b"{" * 2000, b"[" * 2000, b"99999999999999999999999", b"1e999", b"\xed\xa0\x80", b"\xc0\xaf"]


@st.composite
def spliced_bytes(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(SYSLOG_SEEDS))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        if draw(st.booleans()):
            data = data[:at] + draw(st.sampled_from(BYTE_SPLICES)) + data[at:]
        else:
            data = data[:at] + data[at + draw(st.integers(1, 10)):]
    return data


def raw_messages() -> st.SearchStrategy[bytes]:
    return st.one_of(spliced_bytes(), st.binary(max_size=300))


Check = Callable[[Any], None]


SWEEP_VALUES: list[Any] = [None, True, -1, 2**70, 1e308, "", "x", [], {}, [[]], {"k": {}}, "2023-02-30"]
"""One value of each wrong type, for the exhaustive single-mutation sweep."""


def single_mutations(seeds: list[Any], values: list[Any] = SWEEP_VALUES) -> list[Any]:
    """Every seed with exactly one path replaced by each of ``values`` or deleted: wrong types everywhere."""
    out: list[Any] = []
    for index, seed in enumerate(seeds):
        for path in paths(seed)[1:]:
            for op, value in [("delete", None), *(("replace", v) for v in values)]:
                docs = copy.deepcopy(seeds)
                docs[index] = _set(docs[index], path, op, copy.deepcopy(value))
                out.append(docs)
    return out
