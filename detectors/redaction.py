"""Redaction of secrets in text and alert documents: pure, precompiled, one pass.

Alerts quote what they matched, and a CI log line that leaks an AWS key pair is exactly what
a rule matches. So everything that leaves the detector is redacted *after* detection (rules
see the raw value): each secret is replaced by a marker ``[REDACTED:<kind>:<prefix>…:h=<hash>]``
whose short prefix is the format's public part (``AKIA``, ``ghp_``; none when the format has
no public part) and whose hash is HMAC-SHA256 under a per-installation key, cut to
:data:`HASH_HEX` hex characters: the same secret gives the same marker, so analysts can tell
"the same key leaked twice" without anyone seeing the key.

One combined regular expression holds every format (:data:`FORMATS`) plus the marker itself
as its first alternative: the leftmost match wins, so a marker is consumed whole and never
redacted again (redaction is idempotent), and the text is scanned once.

The formats that the rule pack detects (``sigma-rules/ci/ci_log_*``) carry the rule's id in
``FormatSpec.rule``; ``tests/unit/detectors/test_redaction_rules.py`` asserts both directions agree: every
example event the rule matches no longer matches once redacted, and every sample of a format
is matched by its rule.

No I/O, no clock: the key comes in as bytes (the shell loads or generates it), and counts per
kind go to a dict the caller passes (the shell turns them into a metric).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import ahocorasick

_GLUE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_~.+/-")
"""Characters the formats' boundary look-arounds read (``(?<![A-Za-z0-9_~.-])``, ``(?![A-Za-z0-9/+])``)."""
MAX_PASSES = 4
"""Scans of one text at most (each after a pass that replaced something)."""
HASH_HEX = 8
"""Hex characters of the keyed hash kept in a marker (32 bits: enough to correlate, useless to guess)."""
CLEAN_CHARS = 256
"""Longest text of a document whose "no secret here" verdict is kept across documents."""
CLEAN_CACHE = 8192
"""Such texts kept at most (the set is dropped when full: a stream's repeated values come back quickly)."""
NAME_CACHE = 4096
"""Field names whose :func:`secret_name` answer is kept at most (the set is dropped when full)."""
MARKER_START = "[REDACTED:"
MARKER = re.compile(r"\[REDACTED:[a-z0-9-]+(?::[^\]\s]{0,24}…)?(?::h=[0-9a-f]{1,16})?\]")
"""What a marker looks like; anything matching it is left alone."""

SECRET_NAME = (r"(?:pass(?:word|wd|phrase)|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|"
               r"private[_-]?key|client[_-]?secret|credentials?|auth[_-]?key|session[_-]?key|signing[_-]?key)"
               r"(?-i:(?![a-z]))")
"""Words that make a field name secret-like (anywhere in the name, any case, not followed by a lower-case
letter: ``db_password``, ``secretKey``, ``API_TOKEN``, but not ``tokens`` or ``secretary``)."""
_SECRET_NAME_RE = re.compile(rf"(?i){SECRET_NAME}")
_NAMES: dict[str, bool] = {}
_NOT_MARKER = r"(?!\[REDACTED:|\*\*\*(?![^\s\"'\\,;&}\]]))"
"""A value that is already a marker, or the log mask ``***`` (``service/logs.py``), is not a secret."""


@dataclass(frozen=True, slots=True)
class FormatSpec:
    """One secret format: ``pattern`` has exactly one group named ``v``, the secret itself
    (the text around it, like a key name, stays readable)."""

    kind: str
    pattern: str
    prefix: int | str = 0
    """How much of the secret to keep in the marker: a count of characters, or a regex whose match
    at the start of the secret is kept (``gl[a-z]+-``)."""
    rule: str | None = None
    """The rule pack's rule detecting this format (agreement is tested)."""
    sample: str = ""
    """A text containing one secret of this format, for tests and the benchmark."""
    generic: bool = False
    """Found by the name of its field, not by its shape: a value that also has a known shape
    (``token=ghp_…``) is marked by that shape's kind instead."""
    anchors: tuple[str, ...] = ()
    """Lower-case literals one of which every match contains: the prefilter runs the pattern only on
    a text holding one (a text holding none is returned after a few substring tests)."""
    reach: int = 0
    """How many characters before the anchor it contains a match can start at most (``private_key`` holds
    ``key`` 8 characters in): the pattern is tried only at those positions before each anchor found."""


_B = r"(?<![A-Za-z0-9])"
_E = r"(?![A-Za-z0-9])"

FORMATS: tuple[FormatSpec, ...] = (
    FormatSpec("private-key",
               r"(?P<v>-----BEGIN (?:(?:RSA|EC|DSA|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY(?: BLOCK)?-----"
               r"[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|$))",
               rule="ci_log_private_key",
               sample="key: -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
                      "-----END RSA PRIVATE KEY----- done",
               anchors=("-----begin",)),
    FormatSpec("aws-secret-key",
               r"(?i:aws_?secret_?access_?key[\"']?\s*[:=]\s*[\"']?)" + _NOT_MARKER
               + r"(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
               rule="ci_log_aws_secret_access_key",
               sample="export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq3kLm9tZe",
               anchors=("aws",)),
    FormatSpec("aws-access-key-id", _B + r"(?P<v>(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})" + _E, prefix=4,
               rule="ci_log_aws_access_key_id", sample="aws_access_key_id = AKIAQX3T7FJ2LMNOPQRS",
               anchors=("akia", "asia", "abia", "acca")),
    FormatSpec("azure-storage-key", r"AccountKey=(?P<v>[A-Za-z0-9+/]{86}==)", rule="ci_log_azure_credentials",
               sample="DefaultEndpointsProtocol=https;AccountName=acme;AccountKey="
                      + "Zk9v" * 21 + "Qm==;EndpointSuffix=core.windows.net",
               anchors=("accountkey=",)),
    FormatSpec("azure-client-secret",
               r"(?<![A-Za-z0-9_~.-])(?P<v>[A-Za-z0-9_~.-]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34})(?![A-Za-z0-9_~.-])",
               rule="ci_log_azure_credentials", sample="AZURE_CLIENT_SECRET=Xy18Q~abcdefghijklmnopqrstuvwxyz012345",
               anchors=("q~",), reach=4),
    FormatSpec("gcp-private-key-id", r"\"private_key_id\"\s*:\s*\"(?P<v>[0-9a-f]{40})\"", rule="ci_log_gcp_credentials",
               sample='{"type": "service_account", "private_key_id": "' + "0123456789abcdef0123" * 2 + '"}',
               anchors=("private_key_id",), reach=1),
    FormatSpec("gcp-api-key", r"(?<![A-Za-z0-9_-])(?P<v>AIza[0-9A-Za-z_-]{35})(?![A-Za-z0-9_-])", prefix=4,
               rule="ci_log_gcp_credentials", sample="GOOGLE_API_KEY is AIzaSyD4x9Qe7Lk2mN5pR8sT1vW3yZ6bC0dF2gH",
               anchors=("aiza",)),
    FormatSpec("github-token", r"(?<![A-Za-z0-9_])(?P<v>gh[pousr]_[A-Za-z0-9]{36})(?![A-Za-z0-9_])", prefix=4,
               rule="ci_log_github_token", sample="GITHUB_TOKEN: ghp_R8x2Lk9Qm4Np7Tv1Wy3Zb6Cd0Ef5Gh8Jk2Mn",
               anchors=("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    FormatSpec("github-token", r"(?P<v>github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})", prefix=11,
               rule="ci_log_github_token",
               sample="GH_TOKEN=github_pat_" + "A1b2C3d4E5f6G7h8I9j0K1" + "_" + "Zz9Yy8Xx7Ww6" * 4 + "Vv5Uu4Tt3Ss",
               anchors=("github_pat_",)),
    FormatSpec("gitlab-token", r"(?<![A-Za-z0-9_-])(?P<v>gl(?:pat|dt|rt|ptt|cbt|oas)-[A-Za-z0-9_-]{20,})",
               prefix=r"gl[a-z]+-", rule="ci_log_gitlab_token", sample="PRIVATE-TOKEN: glpat-Xk3Lm9Qr7Tv2Wy5Zb8Cd",
               anchors=("glpat-", "gldt-", "glrt-", "glptt-", "glcbt-", "gloas-")),
    FormatSpec("slack-token", r"(?<![A-Za-z0-9])(?P<v>(?:xox[abposr]|xapp)-[0-9A-Za-z-]{10,})",
               prefix=r"(?:xox[abposr]|xapp)-", rule="ci_log_slack_token",
               sample="SLACK_BOT_TOKEN=xoxb-2048-1234567890-AbCdEfGhIjKlMnOpQrStUvWx",
               anchors=("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xapp-")),
    FormatSpec("slack-webhook", r"hooks\.slack\.com/services/(?P<v>T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,})",
               rule="ci_log_slack_token",
               sample="curl -X POST https://hooks.slack.com/services/T0ABCDEFG/B0HIJKLMN/q1w2e3r4t5y6u7i8o9p0a1s2",
               anchors=("hooks.slack.com/services/",)),
    FormatSpec("jwt", r"(?<![A-Za-z0-9_-])(?P<v>eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)", prefix=3,
               sample="Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
                      "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
               anchors=("eyj",)),
    FormatSpec("url-password", r"://[^\s/:@'\"<>\[\]]{0,128}:" + _NOT_MARKER
               + r"(?P<v>[^\s/@'\"<>]+)(?=@)",
               sample="DATABASE_URL=postgres://app:s3cr3t-Pa55@db.internal:5432/app", generic=True,
               anchors=("://",)),
    FormatSpec("password",
               rf"(?=[PpSsTtAaCc])(?ai:{SECRET_NAME}[A-Za-z0-9_.-]{{0,40}})"  # the look-ahead: fail fast
               r"(?:\\?[\"'])?\s*[:=]\s*"
               r"(?:\\\"" + _NOT_MARKER + r"(?P<v>(?:[^\\]|\\(?!\"))+?)(?=\\\")"  # \"value\" (JSON in a JSON string)
               r"|\"" + _NOT_MARKER + r"(?P<v>(?:[^\"\\]|\\.)+)(?=\")"           # "value"
               r"|'" + _NOT_MARKER + r"(?P<v>[^']+)(?=')"                        # 'value'
               r"|" + _NOT_MARKER + r"(?P<v>[^\s\"'\\,;&}\]{\[][^\s\"'\\,;&}\]]*))",  # value
               sample="db_password=hunter2-but-longer", generic=True,
               anchors=("pass", "pwd", "secret", "token", "key", "credential"), reach=8),
)
"""Every format, most specific first: at one position the first alternative that matches wins."""


def secret_name(name: str) -> bool:
    """Whether a field named ``name`` holds a secret by its name (``db_password``, ``API_KEY``); the
    answers are remembered (:data:`NAME_CACHE`: a stream's field names are few, and asked per alert)."""
    known = _NAMES.get(name)
    if known is None:
        known = _SECRET_NAME_RE.search(name) is not None
        if len(_NAMES) >= NAME_CACHE:
            _NAMES.clear()
        _NAMES[name] = known
    return known


class Redactor:
    """Replaces secrets by markers. Immutable and thread-safe once built; build one per key."""

    def __init__(self, key: bytes, formats: tuple[FormatSpec, ...] = FORMATS) -> None:
        if not key:
            raise ValueError("redaction key must not be empty")
        self._key = key
        self._clean: dict[str, None] = {}
        """Short texts of documents found to hold no secret (:meth:`_text`), up to :data:`CLEAN_CACHE`."""
        specific = tuple(f for f in formats if not f.generic)
        self._specific = Redactor(key, specific) if len(specific) < len(formats) else None
        """Redacts a generic match's value by shape first (``token=ghp_…`` is a github-token)."""
        self._parts: list[str] = []
        self._anchors: list[tuple[int, tuple[str, ...]]] = []
        self._patterns: dict[tuple[int, ...], re.Pattern[str]] = {}
        self._groups: dict[str, tuple[str, tuple[str, ...], Callable[[str], str]]] = {}
        self._generic: set[str] = set()
        for i, spec in enumerate(formats):
            outer = f"f{i}"
            names: list[str] = []

            def rename(_m: re.Match[str], _i: int = i, _names: list[str] = names) -> str:
                _names.append(f"v{_i}_{len(_names)}")
                return f"(?P<{_names[-1]}>"

            body = re.sub(r"\(\?P<v>", rename, spec.pattern)
            self._parts.append(f"(?P<{outer}>{body})")
            self._anchors.append((i, tuple(a.lower() for a in spec.anchors)))
            if spec.anchors and spec.reach < 0:
                raise ValueError(f"format {spec.kind}: reach must not be negative")
            self._groups[outer] = (spec.kind, tuple(names), _prefix_fn(spec.prefix))
            if spec.generic:
                self._generic.add(outer)
        self._pattern(tuple(range(len(formats))))  # every format compiles, or the constructor fails
        anchors = sorted({a for _, spec_anchors in self._anchors for a in spec_anchors})
        self._anchor_search: ahocorasick.Automaton | None = None
        """Every anchor at once, overlapping occurrences included ("private_key_id" also reports "key")."""
        if anchors:
            self._anchor_search = ahocorasick.Automaton()
            for anchor in anchors:
                reach = max(spec.reach for spec in formats if anchor in (a.lower() for a in spec.anchors))
                # (anchor, characters from a match's first possible start to the anchor's last)
                self._anchor_search.add_word(anchor, (anchor, len(anchor) - 1 + reach, reach))
            self._anchor_search.make_automaton()
        self._anchor_formats = {found: frozenset(i for i, spec_anchors in self._anchors if found in spec_anchors)
                                for found in anchors}
        self._always = tuple(i for i, spec_anchors in self._anchors if not spec_anchors)
        self._chosen: dict[frozenset[tuple[str, int, int]], tuple[int, ...]] = {}
        """:meth:`_choose`'s answers."""

    def _pattern(self, chosen: tuple[int, ...]) -> re.Pattern[str]:
        """The combined pattern of the chosen formats (compiled once per combination), marker first."""
        pattern = self._patterns.get(chosen)
        if pattern is None:
            pattern = re.compile("|".join([f"(?P<m>{MARKER.pattern})", *(self._parts[i] for i in chosen)]))
            if len(self._patterns) < 4096:
                self._patterns[chosen] = pattern
        return pattern

    def _any_anchor(self, value: Mapping[str, Any]) -> bool:
        """Whether any anchor occurs in ``value``'s strings (keys of ``details`` and ``group`` too: the
        anchors of the secret-named fields cover every :data:`SECRET_NAME` word), tested once for a
        whole document; the other keys are the document's own schema (``pipesentry.origin.token``)."""
        strings: list[str] = []
        _strings(value, strings, keys=False)
        if self._anchor_search is None:
            return bool(self._always)
        for _ in self._anchor_search.iter(_lowered("\n".join(strings))):
            return True  # the first anchor decides: the set of them is the per-string scans' business
        return bool(self._always)

    def _prefilter(self, text: str) -> tuple[tuple[int, ...], list[int] | None]:
        """The formats whose anchors occur in ``text`` (a format without anchors always runs), and the
        positions where a match of them can start (``None``: anywhere).

        One scan of the lower-cased text for every anchor at once (an Aho-Corasick automaton; Python's
        ``re`` tries each alternative at each position, several times slower on the texts of an alert).
        Every match of a format holds one of its anchors at most :attr:`FormatSpec.reach` characters in,
        and every marker starts with :data:`MARKER_START`, so the combined pattern needs trying only
        there: a few ``match`` calls instead of a ``finditer`` over the whole text (``/etc/passwd`` in an
        event of 200 characters). Not when lower-casing moved characters (``İ``: positions differ), when a
        format has no anchor, or when the positions are so many that a scan costs less."""
        search = self._anchor_search
        if search is None:
            return self._always, None
        lowered = _lowered(text)
        hits = list(search.iter(lowered))
        if not hits:
            return self._always, None
        found = frozenset([hit for _, hit in hits])
        chosen = self._chosen.get(found)
        if chosen is None:
            chosen = self._choose(found)
        if self._always or len(lowered) != len(text) or len(hits) * _CHARS_PER_HIT > len(text):
            return chosen, None
        if len(hits) == 1 and MARKER_START not in text:  # the common case: one anchor, no marker
            end, (_anchor, span, reach) = hits[0]
            first = end - span
            return chosen, list(range(first if first > 0 else 0, first + reach + 1))
        starts: set[int] = set()
        for end, (_anchor, span, reach) in hits:
            first = end - span
            starts.update(range(first if first > 0 else 0, first + reach + 1))
        at = text.find(MARKER_START)
        while at >= 0:
            starts.add(at)
            at = text.find(MARKER_START, at + 1)
        if len(starts) * _CHARS_PER_TRY > len(text):
            return chosen, None
        return chosen, sorted(starts)

    def _choose(self, found: frozenset[tuple[str, int, int]]) -> tuple[int, ...]:
        """The formats of the anchors ``found`` (and those without anchors), remembered per set of anchors."""
        chosen = set(self._always)
        for anchor, _span, _reach in found:
            chosen |= self._anchor_formats[anchor]
        ordered = tuple(sorted(chosen))
        if len(self._chosen) < 4096:
            self._chosen[found] = ordered
        return ordered

    def digest(self, secret: str) -> str:
        """The marker's hash of ``secret`` (HMAC-SHA256 under the installation key, truncated)."""
        return hmac.new(self._key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:HASH_HEX]

    def marker(self, kind: str, secret: str, prefix: str = "") -> str:
        shown = f":{prefix}…" if prefix else ""
        return f"{MARKER_START}{kind}{shown}:h={self.digest(secret)}]"

    def text(self, text: str, counts: MutableMapping[str, int] | None = None) -> str:
        """``text`` with every secret replaced by its marker; ``counts[kind]`` grows per secret.

        A replacement can expose a secret its neighbour hid (a JWT glued to a key block's closing
        ``-----`` has no boundary before it until the block is a marker), so a text where a replaced
        span touched a character the formats' boundaries look at (:data:`_GLUE`) is scanned again, up
        to :data:`MAX_PASSES` times: the result is a fixed point, and redaction idempotent."""
        for _ in range(MAX_PASSES):
            redacted, glued = self._pass(text, counts)
            text = redacted
            if not glued:
                break
        return text

    def _pass(self, text: str, counts: MutableMapping[str, int] | None) -> tuple[str, bool]:
        """One scan: the text (``text`` itself when nothing was replaced), and whether a replaced span
        was glued to a neighbouring character that a format's boundary check reads."""
        if not text:
            return text, False
        chosen, starts = self._prefilter(text)
        if not chosen:
            return text, False
        out: list[str] = []
        last = 0
        glued = False
        pattern = self._pattern(chosen)
        for m in pattern.finditer(text) if starts is None else _matches_at(pattern, text, starts):
            group = m.lastgroup
            if group == "m" or group is None:
                continue
            kind, names, prefix_of = self._groups[group]
            for name in names:
                start, end = m.span(name)
                if start >= 0:
                    break
            else:  # a format without its secret group matched (cannot happen for FORMATS)
                continue
            secret = text[start:end]
            out.append(text[last:start])
            last = end
            glued = glued or (start > 0 and text[start - 1] in _GLUE) or (end < len(text) and text[end] in _GLUE)
            if group in self._generic and self._specific is not None:
                by_shape = self._specific.text(secret, counts)
                if by_shape != secret:  # only the markers: what is left of the value would be redacted again
                    out.append("".join(MARKER.findall(by_shape)))
                    continue
            out.append(self.marker(kind, secret, prefix_of(secret)))
            if counts is not None:
                counts[kind] = counts.get(kind, 0) + 1
        if not out:
            return text, False
        out.append(text[last:])
        return "".join(out), glued

    def value(self, value: Any, counts: MutableMapping[str, int] | None = None) -> Any:
        """A whole value known to be secret (its field is named like one): one marker for all of it.
        Empty values and markers stay as they are."""
        if value is None or value == "" or isinstance(value, bool):
            return value
        text = value if isinstance(value, str) else str(value)
        if MARKER.fullmatch(text):
            return text
        if counts is not None:
            counts["secret-field"] = counts.get("secret-field", 0) + 1
        return self.marker("secret-field", text)

    def deep(self, value: Any, counts: MutableMapping[str, int] | None = None, *, by_name: bool = False) -> Any:
        """A JSON-like value with every string redacted (a new value; the input is not changed).
        ``by_name``: values under keys named like secrets are replaced whole."""
        return self._deep(value, counts, {}, by_name)

    def _deep(self, value: Any, counts: MutableMapping[str, int] | None, memo: _Memo, by_name: bool) -> Any:
        """:meth:`deep` with ``memo``: each distinct string of one document is redacted once."""
        kind = type(value)
        if kind is str:
            return self._text(value, counts, memo)
        if kind in _NO_TEXT:
            return value
        if isinstance(value, str):
            return self._text(value, counts, memo)
        if kind is dict or isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for k, v in value.items():
                if by_name and isinstance(k, str) and secret_name(k) and not isinstance(v, Mapping | list | tuple):
                    out[k] = self.value(v, counts)
                else:
                    out[k] = self._deep(v, counts, memo, by_name)
            return out
        if kind is list or isinstance(value, list | tuple):
            return [self._deep(v, counts, memo, by_name) for v in value]
        return value

    def _text(self, text: str, counts: MutableMapping[str, int] | None, memo: _Memo) -> str:
        """:meth:`text` of a string of a document, from ``memo`` when the document held it before (a
        matched value is also an entity field; the level is also the severity label): :meth:`text` is a
        function of the text alone, so the memo replays its result and its counts. Short texts without a
        secret are also kept across documents (:data:`CLEAN_CACHE`; ``/etc/passwd``, ``eu-west-1``)."""
        if text in self._clean:  # first: most strings of a document (its clean texts come back)
            return text
        hit = memo.get(text)
        if hit is None:
            found: dict[str, int] = {}
            out = self.text(text, found)
            hit = memo[text] = (out, found)
            if not found and out == text and len(text) <= CLEAN_CHARS:
                if len(self._clean) >= CLEAN_CACHE:
                    self._clean.clear()  # a new working set; racing threads at worst scan a text again
                self._clean[text] = None
        if counts is not None:
            for kind, n in hit[1].items():
                counts[kind] = counts.get(kind, 0) + n
        return hit[0]

    def matched(self, entries: list[dict[str, Any]], counts: MutableMapping[str, int] | None = None,
                ) -> list[dict[str, Any]]:
        """``[{"field", "value"}]`` entries (alerts and pages): a secret-named field's value is
        replaced whole, any other value has its secrets replaced."""
        return self._matched(entries, counts, {})

    def _matched(self, entries: list[dict[str, Any]], counts: MutableMapping[str, int] | None, memo: _Memo,
                 ) -> list[dict[str, Any]]:
        out = []
        for entry in entries:
            name, value = entry.get("field"), entry.get("value")
            if isinstance(name, str) and secret_name(name):
                value = self.value(value, counts)
            else:
                value = self._deep(value, counts, memo, False)
            out.append({**entry, "value": value})
        return out

    def document(self, doc: Mapping[str, Any], counts: MutableMapping[str, int] | None = None) -> dict[str, Any]:
        """An alert document (``Alert.to_document()``) with its secrets redacted: every string but the
        rule's own metadata (:data:`DOCUMENT_RULE_KEYS`), matched values by their field's name too, and
        ``pipesentry.details`` by key names.

        One walk, copying only what changes: a part without a secret is the input's own object (as the
        whole document is when it holds none, the common case), and each distinct string is redacted once
        (:meth:`_text`). Order of the walk (and so of ``counts``): the document's keys, ``pipesentry``'s
        in their place, then ``pipesentry.matched``, then ``pipesentry.details``."""
        memo: _Memo = {}
        out: dict[str, Any] | None = None
        src: Mapping[str, Any] | None = None
        new: Any
        for k, v in doc.items():
            if k in _DOCUMENT_RULE_SET:
                continue
            if k == "pipesentry" and isinstance(v, Mapping):
                src = v
                new = self._fields(v, counts, memo, _DOCUMENT_SPECIAL)
            else:
                new = self._cow(v, counts, memo, False)
            if new is not v:
                if out is None:
                    out = dict(doc)
                out[k] = new
        if src is not None:
            ps: dict[str, Any] | None = None
            matched = src.get("matched")
            if "matched" in src:
                new = (self._matched_cow(matched, counts, memo) if isinstance(matched, list)
                       else self._cow(matched, counts, memo, False))
                if new is not matched:
                    ps = _own(out, src)
                    ps["matched"] = new
            if "details" in src:
                details = src["details"]
                new = self._cow(details, counts, memo, True)
                if new is not details:
                    ps = ps or _own(out, src)
                    ps["details"] = new
            if ps is not None:
                out = out if out is not None else dict(doc)
                out["pipesentry"] = ps
        return out if out is not None else dict(doc)

    def _fields(self, mapping: Mapping[str, Any], counts: MutableMapping[str, int] | None, memo: _Memo,
                skip: frozenset[str]) -> Mapping[str, Any]:
        """``mapping`` with the values of its keys but ``skip`` redacted (copied on the first change)."""
        out: dict[str, Any] | None = None
        for k, v in mapping.items():
            if k in skip:
                continue
            new = self._text(v, counts, memo) if type(v) is str else self._cow(v, counts, memo, False)
            if new is not v:
                if out is None:
                    out = dict(mapping)
                out[k] = new
        return mapping if out is None else out

    def _cow(self, value: Any, counts: MutableMapping[str, int] | None, memo: _Memo, by_name: bool) -> Any:
        """:meth:`_deep` returning ``value`` itself when nothing in it changed (dicts and lists copied on
        their first change; other mappings and sequences, rare in a document, through :meth:`_deep`)."""
        kind = type(value)
        if kind is str:
            return self._text(value, counts, memo)
        if kind in _NO_TEXT:
            return value
        if kind is dict:
            out: dict[Any, Any] | None = None
            for k, v in value.items():
                if by_name and isinstance(k, str) and secret_name(k) and not isinstance(v, Mapping | list | tuple):
                    new = self.value(v, counts)
                elif type(v) is str:  # the common case, without a call of this method
                    new = self._text(v, counts, memo)
                else:
                    new = self._cow(v, counts, memo, by_name)
                if new is not v:
                    if out is None:
                        out = dict(value)
                    out[k] = new
            return value if out is None else out
        if kind is list:
            items: list[Any] | None = None
            for i, v in enumerate(value):
                new = self._text(v, counts, memo) if type(v) is str else self._cow(v, counts, memo, by_name)
                if new is not v:
                    if items is None:
                        items = list(value)
                    items[i] = new
            return value if items is None else items
        return self._deep(value, counts, memo, by_name)

    def _matched_cow(self, entries: list[Any], counts: MutableMapping[str, int] | None, memo: _Memo) -> list[Any]:
        """:meth:`_matched` returning ``entries`` itself when no value changed."""
        out: list[Any] | None = None
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):  # not an entry (a damaged stored document): a plain value
                new_entry: Any = self._cow(entry, counts, memo, False)
            elif type(entry) is not dict:  # what _matched makes of it: a dict with a "value"
                new_entry = self._matched([dict(entry)], counts, memo)[0]
            else:
                name, value = entry.get("field"), entry.get("value")
                new = (self.value(value, counts) if isinstance(name, str) and secret_name(name)
                       else self._cow(value, counts, memo, False))
                new_entry = entry if new is value and "value" in entry else {**entry, "value": new}
            if new_entry is not entry:
                if out is None:
                    out = list(entries)
                out[i] = new_entry
        return entries if out is None else out

    def page(self, page: Mapping[str, Any], counts: MutableMapping[str, int] | None = None) -> dict[str, Any]:
        """A page record (or a page group's base): like :meth:`document`, with the group's values by
        their field names."""
        if not self._any_anchor(_without(page, RULE_KEYS)):
            return dict(page)
        memo: _Memo = {}
        out: dict[str, Any] = _keep(page, self._deep(_without(page, ("matched", "group", *RULE_KEYS)), counts, memo,
                                                     False))
        if isinstance(page.get("matched"), list):
            out["matched"] = self._matched(page["matched"], counts, memo)
        if "group" in page:
            out["group"] = self._deep(page["group"], counts, memo, True)
        return out


RULE_KEYS = ("rule", "tags", "threat", "techniques", "tactics", "rule_source", "falsepositives", "url", "message",
             "summary")
"""Document and page keys that hold the rule's own metadata, copied from the rule pack, never from an
event: not scanned (a rule titled "AWS secret key in CI log" is not a secret, and scanning it would
cost as much as the event). Kept as they are, in their place. ``message``/``summary`` are
``Alert.summary()``: level, rule title and the origin token (input, topic, partition, offset), no
event value."""

DOCUMENT_RULE_KEYS = tuple(k for k in RULE_KEYS if k != "url")
""":data:`RULE_KEYS` of an alert document: ``url`` there is the event's ECS ``url.*`` (an entity field
read from the event, see :mod:`detectors.entities`), not the page's console link, and is scanned."""


_Memo = dict[str, tuple[str, dict[str, int]]]
"""The redacted form of each string of one document, with the counts per kind its redaction added."""

_FOLD = {ord("\u017f"): "s", ord("\u0131"): "i"}
"""Letters that a case-insensitive ``re`` pattern (``(?i:aws_?secret…)``) reads as ASCII ones but that
``lower()`` keeps (long s, dotless i; ``K`` Kelvin sign lower-cases to ``k`` already): the prefilter
folds them too, or ``aw\u017f_secret_access_key=…`` would hold no anchor of a format that matches it."""


def _lowered(text: str) -> str:
    """``text`` as the anchors are searched in: lower-cased, and :data:`_FOLD`-ed unless ASCII."""
    return text.lower() if text.isascii() else text.lower().translate(_FOLD)


_CHARS_PER_HIT = 16
"""A text with an anchor in fewer characters than this on average is scanned whole (``key key key``):
:meth:`Redactor._prefilter` would spend more on the positions than the scan costs."""
_CHARS_PER_TRY = 3
"""What a ``match`` call at one position costs, in characters a ``finditer`` scans in the same time."""


def _matches_at(pattern: re.Pattern[str], text: str, starts: list[int]) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)`` when no match can start elsewhere than at ``starts`` (ascending):
    the leftmost match at or after the last one's end, tried position by position (a match's look-behinds
    still see the text before it). The formats' matches are never empty."""
    end = 0
    match = pattern.match
    for pos in starts:
        if pos < end:
            continue
        m = match(text, pos)
        if m is not None:
            yield m
            end = max(m.end(), pos + 1)


_NO_TEXT = frozenset({type(None), bool, int, float})
"""Types of JSON values without text, told apart by ``type()`` before the slower ``isinstance`` tests."""


def _strings(value: Any, out: list[str], *, keys: bool) -> None:
    kind = type(value)
    if kind is str:
        out.append(value)
    elif kind in _NO_TEXT:
        return
    elif isinstance(value, str):
        out.append(value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if keys:
                out.append(str(k))
            _strings(v, out, keys=keys or k in ("details", "group"))
    elif isinstance(value, list | tuple):
        for v in value:
            _strings(v, out, keys=keys)
    elif value is not None and not isinstance(value, bool | int | float):
        out.append(str(value))


_DOCUMENT_RULE_SET = frozenset(DOCUMENT_RULE_KEYS)
_DOCUMENT_SPECIAL = frozenset({"matched", "details", *DOCUMENT_RULE_KEYS})
"""Keys of ``pipesentry`` not redacted as plain values: matched (by field name), details (by key name), rule
metadata (kept)."""


def _own(out: dict[str, Any] | None, src: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the document's ``pipesentry`` to change: the redacted one if its plain values changed."""
    current = out.get("pipesentry", src) if out is not None else src
    return dict(current)


def _without(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}


def _keep(original: Mapping[str, Any], redacted: dict[str, Any]) -> dict[str, Any]:
    """``redacted`` in ``original``'s key order, with the keys left out of it copied back."""
    return {k: redacted.get(k, v) for k, v in original.items()} | redacted


def _prefix_fn(prefix: int | str) -> Callable[[str], str]:
    if isinstance(prefix, int):
        n = prefix
        return lambda secret: secret[:n] if n and len(secret) > 2 * n else ""
    pattern = re.compile(prefix)

    def keep(secret: str) -> str:
        m = pattern.match(secret)
        return m.group(0) if m and m.end() * 2 < len(secret) else ""

    return keep


__all__ = ["DOCUMENT_RULE_KEYS", "FORMATS", "HASH_HEX", "MARKER", "FormatSpec", "Redactor", "secret_name"]
