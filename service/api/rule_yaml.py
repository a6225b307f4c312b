"""A loaded rule's YAML (its detection logic) as the rules API shows it.

Rules keep their metadata, not their text, so the text is read back from the
rule's file (``RuleInfo.source``) when asked: only a file under a configured
rules path, at most :data:`MAX_RULE_FILE_BYTES`, and of a multi-document file
only the document whose ``id`` (or ``name``, or ``title``) is the rule's. The
file may have changed since the rules were loaded: the answer says the text is
as on disk now.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from detectors.model import RuleInfo

MAX_RULE_FILE_BYTES = 1_048_576
_DOC_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)


def _within(path: Path, roots: Sequence[Path]) -> bool:
    for root in roots:
        try:
            path.relative_to(root)
        except ValueError:
            continue
        return True
    return False


def _key_is(doc: str, key: str, value: str) -> bool:
    pattern = rf"^{key}:[ \t]*['\"]?{re.escape(value)}['\"]?[ \t]*(#.*)?$"
    return re.search(pattern, doc, re.MULTILINE) is not None


def rule_yaml(rule: RuleInfo, roots: Sequence[Path]) -> str | None:
    """The rule's YAML document, or ``None`` (not from a file under ``roots``, unreadable, too large,
    or no document of the file names the rule)."""
    if not rule.source or rule.source.startswith(("request", "check:")):
        return None
    try:
        path = Path(rule.source).resolve()
        resolved_roots = [r.resolve() for r in roots]
        if not _within(path, resolved_roots) or not path.is_file() or path.stat().st_size > MAX_RULE_FILE_BYTES:
            return None
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    docs = [d.strip("\n") for d in _DOC_SPLIT.split(text) if d.strip()]
    if len(docs) == 1:
        return docs[0] + "\n"
    for key, value in (("id", rule.id), ("name", rule.name), ("title", rule.title)):
        if not value:
            continue
        for doc in docs:
            if _key_is(doc, key, value):
                return doc + "\n"
    return None
