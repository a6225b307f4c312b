"""Bounded YAML parsing for rules, anomaly checks and the config file (text in, values out).

PyYAML shares aliased nodes, so a few hundred bytes of nested aliases ("billion
laughs") load instantly and then cost minutes and gigabytes in whatever walks
the result; deep nesting crashes libyaml's recursive composer outright. So every
text is first checked on the parser's event stream, which libyaml produces
without recursion: size in bytes, nesting depth and node count *as if every
alias were expanded*; only a text within the limits is composed and constructed.

Errors are :class:`YamlError`, naming the document, line and column and the
problem, never the text of the line (a credential may be on it), and a failure
to construct one document (``date: 2023-02-30``) does not hide the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from detectors.errors import DetectorError

_LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class YamlLimits:
    """Bounds for one text; the defaults fit the largest SigmaHQ rule many times over."""

    max_bytes: int = 1 << 20
    max_depth: int = 64
    """Nesting of sequences and mappings, aliases expanded."""
    max_nodes: int = 200_000
    """Scalars plus collections over the whole text, aliases expanded."""
    max_documents: int = 10_000


DEFAULT_LIMITS = YamlLimits()


class YamlError(DetectorError, ValueError):
    """A YAML text (or one of its documents) that cannot be loaded; says where and why, not what."""

    def __init__(self, problem: str, line: int | None = None, column: int | None = None,
                 document: int | None = None) -> None:
        self.problem = problem
        self.line = line
        self.column = column
        self.document = document
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.document is not None:
            where.append(f"document {self.document}")
        if self.line is not None:
            where.append(f"line {self.line}, column {self.column}")
        return f"{', '.join(where)}: {self.problem}" if where else self.problem


def _mark(mark: Any) -> tuple[int | None, int | None]:
    if mark is None or getattr(mark, "line", None) is None:
        return None, None
    return int(mark.line) + 1, int(mark.column) + 1


def from_yaml_error(exc: yaml.YAMLError, document: int | None = None) -> YamlError:
    """PyYAML's error without its snippet: ``str()`` of a marked error quotes the offending line."""
    if isinstance(exc, yaml.reader.ReaderError):
        return YamlError(f"unacceptable character #x{exc.character:04x}: {exc.reason}", None, None, document)
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        line, column = _mark(exc.problem_mark or exc.context_mark)
        return YamlError(problem, line, column, document)
    # Unmarked errors are raised by constructors (e.g. SigmaYAMLLoader's duplicate key), whose
    # messages may carry a key but never a whole line.
    return YamlError(str(exc) or type(exc).__name__, None, None, document)


def check_text(text: str, limits: YamlLimits = DEFAULT_LIMITS) -> None:
    """Raise :class:`YamlError` unless ``text`` is well-formed YAML within ``limits``.

    One pass over libyaml's events: every collection and scalar counts as a node;
    an alias counts as the whole (already measured) node its anchor names.
    """
    if len(text) > limits.max_bytes:
        raise YamlError(f"text is larger than {limits.max_bytes} bytes")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate (from a JSON "\ud800" escape, say)
        line = text.count("\n", 0, exc.start) + 1
        column = exc.start - (text.rfind("\n", 0, exc.start) + 1) + 1
        raise YamlError("not valid Unicode: a lone surrogate", line, column) from None
    if size > limits.max_bytes:
        raise YamlError(f"text is larger than {limits.max_bytes} bytes")
    parser = _LOADER(text)
    try:
        _walk_events(parser, limits)
    except yaml.YAMLError as exc:
        raise from_yaml_error(exc) from None
    finally:
        parser.dispose()


def _walk_events(parser: Any, limits: YamlLimits) -> None:
    total = 0
    document = 0
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, expanded height)
    stack: list[list[Any]] = []  # open collections: [anchor, nodes, height of children]

    def add(nodes: int, height: int, event: Any) -> None:
        nonlocal total
        total += nodes
        if total > limits.max_nodes:
            line, column = _mark(event.start_mark)
            raise YamlError(f"more than {limits.max_nodes} nodes (aliases expanded)", line, column, document)
        if len(stack) + height > limits.max_depth:
            line, column = _mark(event.start_mark)
            raise YamlError(f"nested deeper than {limits.max_depth} levels (aliases expanded)",
                            line, column, document)
        if stack:
            stack[-1][1] += nodes
            stack[-1][2] = max(stack[-1][2], height)

    while True:
        event = parser.get_event()
        if event is None or isinstance(event, yaml.StreamEndEvent):
            return
        if isinstance(event, yaml.DocumentStartEvent):
            document += 1
            anchors.clear()
            if document > limits.max_documents:
                line, column = _mark(event.start_mark)
                raise YamlError(f"more than {limits.max_documents} documents", line, column)
        elif isinstance(event, yaml.ScalarEvent):
            add(1, 1, event)
            if event.anchor is not None:
                anchors[event.anchor] = (1, 1)
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            if len(stack) + 1 > limits.max_depth:
                line, column = _mark(event.start_mark)
                raise YamlError(f"nested deeper than {limits.max_depth} levels", line, column, document)
            stack.append([event.anchor, 1, 0])
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            anchor, nodes, height = stack.pop()
            total -= nodes - 1  # children were counted already; add() counts the whole again
            add(nodes, height + 1, event)
            if anchor is not None:
                anchors[anchor] = (nodes, height + 1)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                line, column = _mark(event.start_mark)
                open_anchors = {frame[0] for frame in stack}
                problem = "recursive alias" if event.anchor in open_anchors else "undefined alias"
                raise YamlError(problem, line, column, document)
            nodes, height = anchors[event.anchor]
            add(nodes, height, event)


class _Constructing:
    """Mixin: a constructor error carries the node's position and nothing of its value."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except _CONSTRUCT_ERRORS as exc:
            raise _construct_error(exc, node) from None


_CONSTRUCT_ERRORS = (yaml.YAMLError, ValueError, TypeError, OverflowError, KeyError, AttributeError,
                     RecursionError)


def _construct_error(exc: BaseException, node: Any) -> YamlError:
    """A constructor failure at ``node``; messages of foreign types are left out (they may quote values)."""
    if isinstance(exc, YamlError):
        return exc
    if isinstance(exc, yaml.MarkedYAMLError):
        return from_yaml_error(exc)
    line, column = _mark(getattr(node, "start_mark", None))
    text = str(exc) if isinstance(exc, yaml.YAMLError | ValueError | OverflowError) else ""
    value = getattr(node, "value", None)
    if (isinstance(value, str) and value and value in text) or "'" in text or '"' in text:
        text = ""  # the message quotes (part of) the value, which may be a secret
    kind = str(getattr(node, "tag", "") or "").rsplit(":", 1)[-1]
    return YamlError(f"invalid {kind or 'value'}: {text or type(exc).__name__}", line, column)


_BOUNDED: dict[type[Any], type[Any]] = {}


def _bounded(loader: type[Any]) -> type[Any]:
    cls = _BOUNDED.get(loader)
    if cls is None:
        cls = type(f"Bounded{loader.__name__}", (_Constructing, loader), {})
        _BOUNDED[loader] = cls
    return cls


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a stream: its value, or why it could not be constructed."""

    number: int
    value: Any = None
    error: YamlError | None = None


def load_documents(text: str, *, loader: type[Any] | None = None,
                   limits: YamlLimits = DEFAULT_LIMITS) -> list[Document]:
    """Every document of ``text``, each loaded on its own (empty documents included as ``None``).

    Raises :class:`YamlError` when the text as a whole is malformed or over ``limits``;
    a document whose values cannot be constructed comes back with ``error`` set.
    """
    check_text(text, limits)
    cls = _bounded(loader or _LOADER)
    instance = cls(text)
    out: list[Document] = []
    try:
        number = 0
        while True:
            try:
                if not instance.check_node():
                    break
                node = instance.get_node()
            except yaml.YAMLError as exc:  # checked above; kept for loaders stricter than libyaml
                raise from_yaml_error(exc, number + 1) from None
            number += 1
            try:
                out.append(Document(number, instance.construct_document(node)))
            except _CONSTRUCT_ERRORS as exc:
                err = _construct_error(exc, node)
                out.append(Document(number, error=YamlError(err.problem, err.line, err.column, number)))
                instance.constructed_objects = {}
                instance.recursive_objects = {}
                instance.state_generators = []
    finally:
        instance.dispose()
    return out


def load_one(text: str, *, loader: type[Any] | None = None, limits: YamlLimits = DEFAULT_LIMITS) -> Any:
    """The single document of ``text`` (``None`` when empty); raises :class:`YamlError`."""
    docs = load_documents(text, loader=loader, limits=limits)
    if len(docs) > 1:
        raise YamlError("expected a single document", None, None, docs[1].number)
    if not docs:
        return None
    if docs[0].error is not None:
        raise docs[0].error
    return docs[0].value
