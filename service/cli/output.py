"""What every ``pipesentry`` command shares: the exit codes and the ``--format json|table|csv`` output.

Exit codes (the same for every command; ``pipesentry --help`` and docs/operations.md list them):

- ``0`` (:data:`OK`): done;
- ``1`` (:data:`FAILED`): the command ran and found problems: a check failed (``rules check``,
  ``config check``, ``anomaly check``), input lines were bad (``eval``, ``anomaly replay``, unless
  ``--allow-bad-lines``), nothing usable loaded, or the alert or silence asked for does not exist;
- ``2`` (:data:`USAGE`): the command could not start as invoked: unknown flag, malformed value,
  an input, ``--config`` or ``--token-file`` that cannot be read or is not valid settings (the
  check commands, whose subject such a file is, report it with ``1``), a request the API finds
  invalid (422);
- ``3`` (:data:`UNAVAILABLE`): a runtime failure outside the input: the service cannot be reached,
  refuses the request or answers with an error, reading or writing failed midway, it cannot start;
- ``130``: interrupted (Ctrl-C).

Records (alerts, rules, silences, settings) print as ``json`` (one object per line, for ``jq``),
``table`` (aligned columns, long cells cut) or ``csv`` (header row first). ``--json``, where a
command had it, still works and means ``--format json``, with a note on stderr.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson

OK, FAILED, USAGE, UNAVAILABLE = 0, 1, 2, 3
INTERRUPTED = 130

FORMATS: tuple[str, ...] = ("json", "table", "csv")

EXIT_CODES_EPILOG = """\
exit codes:
  0  done
  1  problems found: a check failed (rules/config/anomaly check), bad input lines
     (eval, anomaly replay; unless --allow-bad-lines), nothing usable loaded,
     no such alert or silence
  2  usage: bad flag or value; an input, --config or --token-file that cannot
     be read or is not valid settings (the check commands report on their
     subject with 1)
  3  unavailable: service unreachable, refused or failing; I/O failure; cannot start
  130 interrupted"""


class _DeprecatedJson(argparse.Action):
    """``--json``: the old spelling of ``--format json``; still works, says so on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use --format json", file=sys.stderr)
        setattr(namespace, self.dest, "json")


def add_format(parser: argparse.ArgumentParser, default: str, *, json_alias: bool = False,
               what: str = "records") -> None:
    """``--format json|table|csv`` (and the deprecated ``--json`` where the command had it)."""
    parser.add_argument("--format", choices=FORMATS, default=default,
                        help=f"how {what} are printed: json (one object per line), table or csv"
                             f" (default {default})")
    if json_alias:
        parser.add_argument("--json", action=_DeprecatedJson, dest="format",
                            help="deprecated: same as --format json")


@dataclass(frozen=True, slots=True)
class Column:
    """One column of ``table`` and ``csv`` output: its header, how to get its text from a record, and
    the widest a table cell may be."""

    header: str
    get: Callable[[Mapping[str, Any]], Any]
    limit: int = 60


def column(header: str, key: str, limit: int = 60) -> Column:
    """A column showing ``record[key]`` (dotted keys walk nested objects)."""
    def get(record: Mapping[str, Any]) -> Any:
        value: Any = record
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return value

    return Column(header, get, limit)


def cell_text(value: Any) -> str:
    """A value as one cell's text: strings as they are, ``None`` empty, the rest as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return orjson.dumps(value).decode()
    return orjson.dumps(value, default=str).decode()


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())  # no newlines or tabs inside a cell
    return text if len(text) <= limit else text[: limit - 1] + "…"


def table_lines(records: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> list[str]:
    """Aligned rows, header first; long cells are cut with an ellipsis."""
    cells = [[_cut(cell_text(c.get(r)), c.limit) for c in columns] for r in records]
    header = [c.header for c in columns]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(columns))]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [header, *cells]]


def write_records(records: Sequence[Mapping[str, Any]], columns: Sequence[Column], fmt: str,
                  out: IO[str] | None = None) -> int:
    """Print ``records`` in ``fmt`` (``json``: every key; ``table``/``csv``: ``columns``); returns the count."""
    out = out if out is not None else sys.stdout
    if fmt == "json":
        for record in records:
            out.write(orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE).decode())
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([c.header for c in columns])
        for record in records:
            writer.writerow([cell_text(c.get(record)) for c in columns])
    else:
        out.write("\n".join(table_lines(records, columns)) + "\n")
    return len(records)


def flatten(doc: Mapping[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """``{"key": dotted key, "value": leaf}`` rows of a nested document (lists stay one value)."""
    rows: list[dict[str, Any]] = []
    for key, value in doc.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(flatten(value, dotted + "."))
        else:
            rows.append({"key": dotted, "value": value})
    return rows


KEY_VALUE_COLUMNS = (column("KEY", "key", 60), column("VALUE", "value", 200))
