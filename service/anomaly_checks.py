"""Reading anomaly check files, shared by the service and ``pipesentry anomaly``.

One place decides what an unreadable or invalid check file becomes (a
:class:`~detectors.anomaly.CheckError` per problem), so ``anomaly check`` and a
service (re)load report the same errors for the same files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from detectors.anomaly import CheckCommon, CheckError, parse_checks


def load_check_files(paths: Iterable[str | Path]) -> tuple[list[CheckCommon], list[CheckError]]:
    """Read and validate check files; unreadable files become errors, valid checks are kept."""
    specs: list[CheckCommon] = []
    errors: list[CheckError] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(CheckError(str(path), None, f"cannot read: {getattr(exc, 'strerror', None) or exc}"))
            continue
        found, problems = parse_checks(text, source=str(path))
        specs.extend(found)
        errors.extend(problems)
    return specs, errors
