"""``pipesentry rules check|list``: validate and inspect rule files without running the service.

``check`` exits 1 when any rule (or file, or pipeline) fails to load and 0
otherwise, so it can gate a rule pack in CI. ``list`` prints one row per detection and
correlation rule. Both take ``--format json|table|csv`` (``--json``: deprecated spelling
of ``--format json``); ``check --format json`` prints one document (counts and problems),
``check --format csv`` one row per problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from typing import IO, Any

import orjson

from detectors.model import RuleInfo
from detectors.sigma import LoadResult, RuleError
from service.cli.output import FAILED, OK, Column, add_format, column, write_records
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
    add_format(parser, "table", json_alias=True)


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


PROBLEM_COLUMNS = (column("SOURCE", "source", 60), column("RULE_ID", "rule_id", 36),
                   column("TITLE", "title", 50), column("REASON", "reason"))


def run_check(args: argparse.Namespace) -> int:
    result = load_rules(args.paths, args.pipeline)
    summary = summarize(result)
    problems = [{"source": e.source, "rule_id": e.rule_id, "title": e.title, "reason": str(e.reason)}
                for e in result.errors]
    if args.format == "json":
        sys.stdout.write(orjson.dumps({**summary, "problems": problems}, option=orjson.OPT_APPEND_NEWLINE).decode())
    elif args.format == "csv":
        write_records(problems, PROBLEM_COLUMNS, "csv")
        print(_summary_text(summary), file=sys.stderr)
    else:
        print(_summary_text(summary))
        for error in result.errors:
            print(error_line(error))
    return FAILED if result.errors else OK


def _summary_text(summary: dict[str, Any]) -> str:
    return (f"{summary['rules']} rules, {summary['correlations']} correlations, "
            f"{summary['filters']} filters, {summary['errors']} errors")


def rule_row(rule: RuleInfo) -> dict[str, Any]:
    return {
        "id": rule.id,
        "title": rule.title,
        "level": rule.level,
        "status": rule.status,
        "kind": rule.kind,
        "logsource": rule.logsource.as_dict(),
        "ruleset": rule.ruleset,
        "source": rule.source,
    }


def _logsource_text(rule: Mapping[str, Any]) -> str:
    ls = rule["logsource"]
    return "/".join(ls.get(part) or "*" for part in ("product", "category", "service"))


RULE_COLUMNS = (column("ID", "id", 36), column("LEVEL", "level", 13),
                Column("LOGSOURCE", _logsource_text, 50), column("STATUS", "status", 12),
                column("RULESET", "ruleset", 30), column("TITLE", "title"))


def run_list(args: argparse.Namespace) -> int:
    result = load_rules(args.paths, args.pipeline)
    print_load_errors(result.errors, sys.stderr)
    rules = [*result.ruleset.rules, *(info for info, _ in result.ruleset.correlations)]
    write_records([rule_row(r) for r in rules], RULE_COLUMNS, args.format)
    return OK
