"""``pipesentry rules check|list``: validate and inspect rule files without running the service.

``check`` exits 1 when any rule (or file, or pipeline) fails to load and 0
otherwise, so it can gate a rule pack in CI. ``list`` prints one line (or one
JSON object with ``--json``) per detection and correlation rule.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import IO, Any

import orjson

from detectors.model import RuleInfo
from detectors.sigma import LoadResult, RuleError
from service.rules import load_rules


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("rules", help="validate or list Sigma rules",
                                   description="Validate or list Sigma rule files.")
    sub = parser.add_subparsers(dest="rules_command", metavar="ACTION", required=True)

    check = sub.add_parser("check", help="validate rules; exit 1 when any rule fails",
                           description="Parse and compile rules; print a summary and one line per problem.")
    _common(check)
    check.set_defaults(func=run_check)

    listing = sub.add_parser("list", help="list rules with id, title, level, log source and ruleset",
                             description="List the rules that load from the given paths.")
    _common(listing)
    listing.set_defaults(func=run_list)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="rule file or directory")
    parser.add_argument("--pipeline", action="append", default=[], metavar="FILE",
                        help="pySigma processing pipeline YAML file (repeatable)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def error_line(error: RuleError) -> str:
    """``source: rule_id: reason`` (``-`` when the rule id is unknown)."""
    reason = " ".join(str(error.reason).split())
    return f"{error.source}: {error.rule_id or '-'}: {reason}"


def print_load_errors(errors: Iterable[RuleError], err: IO[str]) -> None:
    for error in errors:
        print(f"rule error: {error_line(error)}", file=err)


def summarize(result: LoadResult) -> dict[str, Any]:
    rs = result.ruleset
    return {
        "rules": len(rs.rules),
        "correlations": len(rs.correlations),
        "filters": len(rs.filters),
        "errors": len(result.errors),
    }


def run_check(args: argparse.Namespace) -> int:
    result = load_rules(args.paths, args.pipeline)
    summary = summarize(result)
    if args.json:
        doc = {
            **summary,
            "problems": [
                {"source": e.source, "rule_id": e.rule_id, "title": e.title, "reason": str(e.reason)}
                for e in result.errors
            ],
        }
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE).decode())
    else:
        print(f"{summary['rules']} rules, {summary['correlations']} correlations, "
              f"{summary['filters']} filters, {summary['errors']} errors")
        for error in result.errors:
            print(error_line(error))
    return 1 if result.errors else 0


def rule_row(rule: RuleInfo) -> dict[str, Any]:
    return {
        "id": rule.id,
        "title": rule.title,
        "level": rule.level,
        "kind": rule.kind,
        "logsource": rule.logsource.as_dict(),
        "ruleset": rule.ruleset,
        "source": rule.source,
    }


def _logsource_text(rule: RuleInfo) -> str:
    ls = rule.logsource
    return "/".join(part or "*" for part in (ls.product, ls.category, ls.service))


def run_list(args: argparse.Namespace) -> int:
    result = load_rules(args.paths, args.pipeline)
    print_load_errors(result.errors, sys.stderr)
    rules = [*result.ruleset.rules, *(info for info, _ in result.ruleset.correlations)]
    if args.json:
        out = sys.stdout
        for rule in rules:
            out.write(orjson.dumps(rule_row(rule), option=orjson.OPT_APPEND_NEWLINE).decode())
        return 0
    header = ("ID", "LEVEL", "LOGSOURCE", "RULESET", "TITLE")
    rows = [(r.id, r.level, _logsource_text(r), r.ruleset, r.title) for r in rules]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
    return 0
