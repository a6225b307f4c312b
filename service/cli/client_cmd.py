"""``pipesentry alerts list|show`` and ``pipesentry silences list|create|expire``: the running service's API.

The service is found at ``--url``, else ``$PIPESENTRY_URL``, else the API address of the settings
(``--config``, or defaults plus ``PIPESENTRY_*`` environment: ``http://127.0.0.1:8080``). The bearer
token comes from ``--token-file`` (a file holding only the token) or ``$PIPESENTRY_TOKEN``; there is
no ``--token`` flag, so a token never shows in ``ps`` output or shell history. Without either the
request is sent without a token (the loopback default has authentication off).

Records print as ``--format table`` (default), ``json`` (one object per line) or ``csv``.
Exit codes (:mod:`service.cli.output`): 0 done; 1 no such alert or silence; 2 bad flags, an unreadable
token file, or a request the service finds invalid (422); 3 the service cannot be reached, refuses
the token (401/403) or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from detectors.model import LEVELS
from service.alerting.indexing import origin_of
from service.cli.output import (
    FAILED,
    KEY_VALUE_COLUMNS,
    OK,
    UNAVAILABLE,
    USAGE,
    Column,
    add_format,
    column,
    flatten,
    write_records,
)
from service.errors import ServiceError

TOKEN_ENV = "PIPESENTRY_TOKEN"
URL_ENV = "PIPESENTRY_URL"
MAX_TOKEN_FILE_BYTES = 64 * 1024

Transport = Callable[[], httpx.AsyncBaseTransport | None]
transport_factory: Transport = lambda: None  # noqa: E731
"""Tests swap in an ASGI transport over the application; None: the network."""


class ClientError(ServiceError):
    """A request that did not succeed; ``code`` is the exit code, the message never holds the token."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _RefuseToken(argparse.Action):
    """``--token``: refused without echoing its value (a token on the command line shows in ``ps``)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser.error(f"{option_string} is not accepted (the command line shows in ps and shell history);"
                     f" give --token-file FILE or ${TOKEN_ENV}")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", action=_RefuseToken, nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--url", default=None, metavar="URL",
                        help=f"the service's base URL (default: ${URL_ENV}, else the API address of the settings)")
    parser.add_argument("--config", "-c", type=Path, default=None, metavar="FILE",
                        help="settings file whose api.host/api.port/api.tls locate the service")
    parser.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                        help=f"file holding the bearer token (default: ${TOKEN_ENV}); there is no --token flag")
    parser.add_argument("--cacert", type=Path, default=None, metavar="FILE",
                        help="CA bundle to verify an https service with (default: the system's)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="request timeout (default 10)")


def _action(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, func: Any, *, help: str,
            fmt: str, what: str, description: str | None = None) -> argparse.ArgumentParser:
    """One ACTION of ``alerts``/``silences``: the API options, ``--format`` and its handler."""
    parser = sub.add_parser(name, help=help, description=description, allow_abbrev=False)
    _common(parser)
    add_format(parser, fmt, what=what)
    parser.set_defaults(func=func)
    return parser


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    alerts = subparsers.add_parser("alerts", help="list or show the running service's alerts",
                                   description="Query the alert store of a running pipesentry through its API.")
    sub = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    listing = _action(sub, "list", run_alerts_list, help="list alerts, newest first", fmt="table", what="alerts")
    listing.add_argument("--level", action="append", default=[], choices=LEVELS, help="this level (repeatable)")
    listing.add_argument("--min-level", choices=LEVELS, default=None, help="this level or above")
    listing.add_argument("--status", action="append", default=[], choices=("new", "acknowledged", "resolved"),
                         help="triage status (repeatable)")
    listing.add_argument("--rule", default=None, metavar="RULE", help="rule id or title")
    listing.add_argument("--since", default=None, metavar="TIME", help="RFC 3339 time or unix seconds")
    listing.add_argument("--until", default=None, metavar="TIME", help="RFC 3339 time or unix seconds")
    listing.add_argument("--query", "-q", default=None, metavar="TEXT", help="free text")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="at most N alerts (1-1000, default 50)")
    listing.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N")
    show = _action(sub, "show", run_alerts_show, help="show one alert", fmt="json", what="the alert")
    show.add_argument("alert_id", metavar="ID")

    silences = subparsers.add_parser("silences", help="list, create or expire silences of the running service",
                                     description="Manage the silences of a running pipesentry through its API.")
    sub = silences.add_subparsers(dest="silences_command", metavar="ACTION", required=True)
    listing = _action(sub, "list", run_silences_list, help="list silences", fmt="table", what="silences")
    listing.add_argument("--expired", action="store_true", help="include expired silences")
    create = _action(sub, "create", run_silences_create, help="mute pages of matching alerts for a while",
                     description="Create a silence; every given matcher must hold.", fmt="table", what="the silence")
    create.add_argument("--rule", action="append", default=[], metavar="ID", help="rule id or title glob (repeatable)")
    create.add_argument("--level", action="append", default=[], choices=LEVELS, help="level (repeatable)")
    create.add_argument("--max-level", choices=LEVELS, default=None, help="levels up to this one")
    create.add_argument("--tag", action="append", default=[], metavar="TAG", help="tag glob (repeatable)")
    create.add_argument("--field", action="append", default=[], metavar="NAME=VALUE",
                        help="event field value (repeatable)")
    until = create.add_mutually_exclusive_group(required=True)
    until.add_argument("--duration", type=duration_arg, default=None, metavar="DURATION",
                       help="how long, e.g. 90m, 2h, 1d, 3600 (seconds)")
    until.add_argument("--ends-at", default=None, metavar="TIME", help="RFC 3339 time or unix seconds")
    create.add_argument("--comment", required=True, help="why (the next on-call reads it)")
    create.add_argument("--confirm-wildcard", action="store_true",
                        help="admins: a silence matching every alert is meant")
    expire = _action(sub, "expire", run_silences_expire, help="end a silence now", fmt="table", what="the silence")
    expire.add_argument("silence_id", metavar="ID")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def duration_arg(text: str) -> float:
    """``90m``, ``2h``, ``1d``, ``30s`` or plain seconds (argparse type)."""
    found = _DURATION.match(text)
    if found is None or float(found.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: expected e.g. 30s, 90m, 2h, 1d")
    return float(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[found.group(2)]


def base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV].rstrip("/")
    from service.config import ConfigError, api_base_url, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        raise ClientError(str(exc), USAGE) from None
    return api_base_url(settings.api).replace("://localhost:", "://127.0.0.1:")


def read_token(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        try:
            with open(args.token_file, "rb") as handle:
                data = handle.read(MAX_TOKEN_FILE_BYTES + 1)
        except OSError as exc:
            raise ClientError(f"cannot read --token-file {args.token_file}: {exc.strerror or exc}", USAGE) from None
        if len(data) > MAX_TOKEN_FILE_BYTES:
            raise ClientError(f"--token-file {args.token_file} is too large for a token", USAGE)
        token = data.decode("utf-8", "replace").strip()
        if not token:
            raise ClientError(f"--token-file {args.token_file} is empty", USAGE)
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or str(response.status_code)
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI's validation errors
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                         for d in detail if isinstance(d, dict))
    return str(detail) if detail is not None else str(response.status_code)


def request(args: argparse.Namespace, method: str, path: str, *, params: Mapping[str, Any] | None = None,
            body: Any = None) -> Any:
    """One API call; the decoded JSON answer, or :class:`ClientError` with the exit code."""
    url = base_url(args)
    token = read_token(args)
    headers = {"Accept": "application/json", "X-Pipesentry-Client": "pipesentry-cli"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    query = {k: v for k, v in (params or {}).items() if v is not None and v != []}

    async def call() -> httpx.Response:
        transport = transport_factory()
        verify: Any = str(args.cacert) if args.cacert is not None else True
        async with httpx.AsyncClient(base_url=url, transport=transport, timeout=args.timeout, verify=verify,
                                     headers=headers, follow_redirects=False) as client:
            return await client.request(method, path, params=query, json=body)

    try:
        response = asyncio.run(call())
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the service at {url}: {type(exc).__name__}: {exc}", UNAVAILABLE) from None
    except OSError as exc:  # e.g. an unreadable --cacert
        raise ClientError(f"cannot reach the service at {url}: {exc}", UNAVAILABLE) from None
    status = response.status_code
    if status < 300:
        try:
            return response.json()
        except ValueError:
            raise ClientError(f"{url}{path}: the answer is not JSON (is {url} a pipesentry API?)",
                              UNAVAILABLE) from None
    if status in (401, 403):
        hint = "" if token is not None else f" (no token: give --token-file or ${TOKEN_ENV})"
        raise ClientError(f"refused ({status}): {_detail(response)}{hint}", UNAVAILABLE)
    if status == 404:
        raise ClientError(f"not found: {_detail(response)}", FAILED)
    if status in (400, 413, 422):
        raise ClientError(f"invalid request ({status}): {_detail(response)}", USAGE)
    raise ClientError(f"the service answered {status}: {_detail(response)}", UNAVAILABLE)


def _run(name: str, action: Callable[[], int]) -> int:
    try:
        return action()
    except ClientError as exc:
        print(f"pipesentry {name}: {exc}", file=sys.stderr)
        return exc.code


def _origin_input(doc: Mapping[str, Any]) -> Any:
    """The alert's input (``pipesentry.origin.input``; ``log.source.input`` in alerts of earlier builds)."""
    return origin_of(doc).get("input")


ALERT_COLUMNS = (
    column("TIME", "@timestamp", 24), column("LEVEL", "pipesentry.level", 13),
    column("ALERT_ID", "pipesentry.alert_id", 32), column("RULE", "rule.name", 50),
    Column("SOURCE", _origin_input, 30), column("MESSAGE", "message", 80),
)


def run_alerts_list(args: argparse.Namespace) -> int:
    def action() -> int:
        page = request(args, "GET", "/api/v1/alerts", params={
            "level": args.level, "min_level": args.min_level, "status": args.status, "rule": args.rule, "since": args.since, "until": args.until, "q": args.query,
            "limit": args.limit, "offset": args.offset})
        items = page.get("items", []) if isinstance(page, dict) else []
        write_records(items, ALERT_COLUMNS, args.format)
        total = page.get("total") if isinstance(page, dict) else None
        print(f"{len(items)} of {total} alerts", file=sys.stderr)
        return OK

    return _run("alerts list", action)


def run_alerts_show(args: argparse.Namespace) -> int:
    def action() -> int:
        doc = request(args, "GET", f"/api/v1/alerts/{quote(args.alert_id, safe='')}")
        _print_one(doc, args.format)
        return OK

    return _run("alerts show", action)


def _print_one(doc: Any, fmt: str, columns: tuple[Column, ...] | None = None) -> None:
    if fmt == "json" or not isinstance(doc, dict):
        write_records([doc], (), "json")
    elif columns is not None:
        write_records([doc], columns, fmt)
    else:
        write_records(flatten(doc), KEY_VALUE_COLUMNS, fmt)


def _match_text(record: Mapping[str, Any]) -> str:
    match = record.get("match")
    if not isinstance(match, dict):
        return ""
    return ", ".join(f"{k}={v if isinstance(v, str) else ','.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in match.items())


def _iso(key: str) -> Callable[[Mapping[str, Any]], str]:
    def get(record: Mapping[str, Any]) -> str:
        from datetime import UTC, datetime

        value = record.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return ""
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return get


SILENCE_COLUMNS = (
    column("ID", "id", 36), column("ACTIVE", "active", 6), Column("ENDS_AT", _iso("ends_at"), 20),
    column("CREATED_BY", "created_by", 20), Column("MATCH", _match_text, 60), column("COMMENT", "comment", 60),
)


def run_silences_list(args: argparse.Namespace) -> int:
    def action() -> int:
        page = request(args, "GET", "/api/v1/silences", params={"expired": "true" if args.expired else None})
        items = page.get("items", []) if isinstance(page, dict) else []
        write_records(items, SILENCE_COLUMNS, args.format)
        return OK

    return _run("silences list", action)


def silence_body(args: argparse.Namespace) -> dict[str, Any]:
    """The ``POST /api/v1/silences`` body of ``silences create``'s flags."""
    fields: dict[str, str | list[str]] = {}
    for item in args.field:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ClientError(f"--field {item!r}: expected NAME=VALUE", USAGE)
        previous = fields.get(name)
        fields[name] = value if previous is None else [*([previous] if isinstance(previous, str) else previous), value]
    match: dict[str, Any] = {"rule_ids": args.rule, "levels": args.level, "tags": args.tag, "fields": fields}
    if args.max_level:
        match["max_level"] = args.max_level
    body: dict[str, Any] = {"match": {k: v for k, v in match.items() if v}, "comment": args.comment}
    if args.duration is not None:
        body["duration_s"] = args.duration
    else:
        body["ends_at"] = _time_arg(args.ends_at)
    if args.confirm_wildcard:
        body["confirm_wildcard"] = True
    return body


def _time_arg(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    from service.alerting.store import parse_time

    try:
        return parse_time(text)
    except (ValueError, OverflowError):
        raise ClientError(f"--ends-at {text!r}: expected an RFC 3339 time or unix seconds", USAGE) from None


def run_silences_create(args: argparse.Namespace) -> int:
    def action() -> int:
        doc = request(args, "POST", "/api/v1/silences", body=silence_body(args))
        _print_one(doc, args.format, SILENCE_COLUMNS)
        return OK

    return _run("silences create", action)


def run_silences_expire(args: argparse.Namespace) -> int:
    def action() -> int:
        doc = request(args, "DELETE", f"/api/v1/silences/{quote(args.silence_id, safe='')}")
        _print_one(doc, args.format, SILENCE_COLUMNS)
        return OK

    return _run("silences expire", action)
