"""Local HTTP receivers that check what the real services check.

Each receiver validates requests against the service's documented format and
answers like the service does, keeping what it accepted for assertions:

* PagerDuty Events API v2 (``POST /v2/enqueue``): routing_key, event_action,
  dedup_key <= 255; for triggers a payload with summary (1..1024 chars), source,
  severity in critical/error/warning/info, optional ISO 8601 timestamp, links.
* Opsgenie Alert API (``POST /v2/alerts``, ``POST /v2/alerts/{alias}/close?identifierType=alias``):
  ``Authorization: GenieKey``; message 1..130, alias <= 512, description <= 15000,
  <= 20 tags of <= 50 chars, details string map, entity <= 512, source <= 100,
  priority P1..P5.
* Slack incoming webhook: ``text`` or ``blocks``; <= 50 blocks; header plain_text
  <= 150; section text <= 3000 or <= 10 fields of <= 2000; button text <= 75,
  url <= 3000; answers ``ok`` / ``invalid_blocks`` like Slack.
* Generic webhook: verifies ``X-Pipesentry-Signature`` (HMAC-SHA256 of
  ``<timestamp>.<body>``) and timestamp freshness.
* Elasticsearch 8 stand-in: requires ``compatible-with=8`` media types, answers
  with ``X-Elastic-Product: Elasticsearch`` (the official client refuses servers
  without it), parses bulk NDJSON and keeps documents by index and ``_id``.

Every receiver can be told to fail the next N requests with a status code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web


@dataclass
class Received:
    accepted: list[Any] = field(default_factory=list)
    rejected: list[tuple[Any, list[str]]] = field(default_factory=list)
    requests: int = 0


class Receiver:
    """Base: runs an aiohttp app on a free loopback port."""

    def __init__(self) -> None:
        self.got = Received()
        self.fail_next = 0
        self.fail_status = 500
        self.fail_only: tuple[str, ...] = ()
        """Paths (suffixes) the injected failures apply to; empty: every request."""
        self._runner: web.AppRunner | None = None
        self.url = ""

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> Receiver:
        app = web.Application(middlewares=[self._failer])
        self.routes(app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _failer(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.got.requests += 1
        if self.fail_next > 0 and (not self.fail_only or request.path.endswith(self.fail_only)):
            self.fail_next -= 1
            return web.Response(status=self.fail_status, text="injected failure")
        response: web.StreamResponse = await handler(request)
        return response

    def reject(self, body: Any, errors: list[str]) -> None:
        self.got.rejected.append((body, errors))


def _str(errors: list[str], obj: dict[str, Any], key: str, *, required: bool = False, max_len: int | None = None,
         min_len: int = 0) -> None:
    if key not in obj:
        if required:
            errors.append(f"{key} is required")
        return
    value = obj[key]
    if not isinstance(value, str):
        errors.append(f"{key} must be a string")
    elif len(value) < min_len:
        errors.append(f"{key} must not be empty")
    elif max_len is not None and len(value) > max_len:
        errors.append(f"{key} longer than {max_len}")


# --- PagerDuty ------------------------------------------------------------------
class PagerDuty(Receiver):
    def __init__(self) -> None:
        super().__init__()
        self.incidents: dict[str, dict[str, Any]] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/enqueue", self.enqueue)

    @staticmethod
    def validate(body: Any) -> list[str]:
        errors: list[str] = []
        if not isinstance(body, dict):
            return ["body must be an object"]
        _str(errors, body, "routing_key", required=True, min_len=1)
        action = body.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("event_action must be trigger, acknowledge or resolve")
        _str(errors, body, "dedup_key", required=action != "trigger", max_len=255, min_len=1)
        if action == "trigger":
            payload = body.get("payload")
            if not isinstance(payload, dict):
                errors.append("payload is required for trigger")
            else:
                _str(errors, payload, "summary", required=True, max_len=1024, min_len=1)
                _str(errors, payload, "source", required=True, min_len=1)
                if payload.get("severity") not in ("critical", "error", "warning", "info"):
                    errors.append("payload.severity must be critical, error, warning or info")
                if "timestamp" in payload:
                    try:
                        datetime.fromisoformat(str(payload["timestamp"]).replace("Z", "+00:00"))
                    except ValueError:
                        errors.append("payload.timestamp must be ISO 8601")
                for key in ("component", "group", "class"):
                    _str(errors, payload, key)
                if "custom_details" in payload and not isinstance(payload["custom_details"], (dict, str)):
                    errors.append("payload.custom_details must be an object")
            for link in body.get("links", []):
                if not isinstance(link, dict) or not isinstance(link.get("href"), str):
                    errors.append("links[] need href")
        return errors

    async def enqueue(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"status": "invalid event", "message": "Event object is invalid"}, status=400)
        errors = self.validate(body)
        if errors:
            self.reject(body, errors)
            return web.json_response({"status": "invalid event", "message": "Event object is invalid",
                                      "errors": errors}, status=400)
        self.got.accepted.append(body)
        key = body["dedup_key"]
        inc = self.incidents.setdefault(key, {"status": "triggered", "events": 0})
        inc["events"] += 1
        inc["status"] = "resolved" if body["event_action"] == "resolve" else "triggered"
        if body["event_action"] == "trigger":
            inc["summary"] = body["payload"]["summary"]
        return web.json_response({"status": "success", "message": "Event processed", "dedup_key": key},
                                 status=202)


# --- Opsgenie -------------------------------------------------------------------
class Opsgenie(Receiver):
    def __init__(self, api_key: str = "test-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.alerts: dict[str, dict[str, Any]] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/alerts", self.create)
        app.router.add_post("/v2/alerts/{identifier}/close", self.close)

    def _auth(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"GenieKey {self.api_key}"

    @staticmethod
    def validate(body: Any) -> list[str]:
        errors: list[str] = []
        if not isinstance(body, dict):
            return ["body must be an object"]
        _str(errors, body, "message", required=True, max_len=130, min_len=1)
        _str(errors, body, "alias", max_len=512)
        _str(errors, body, "description", max_len=15000)
        _str(errors, body, "entity", max_len=512)
        _str(errors, body, "source", max_len=100)
        _str(errors, body, "user", max_len=100)
        tags = body.get("tags", [])
        if not isinstance(tags, list) or len(tags) > 20 or any(not isinstance(t, str) or len(t) > 50 for t in tags):
            errors.append("tags: at most 20 strings of at most 50 chars")
        details = body.get("details", {})
        if not isinstance(details, dict) or any(not isinstance(v, str) for v in details.values()):
            errors.append("details must map strings to strings")
        elif sum(len(k) + len(v) for k, v in details.items()) > 8000:
            errors.append("details longer than 8000 chars")
        if "priority" in body and body["priority"] not in ("P1", "P2", "P3", "P4", "P5"):
            errors.append("priority must be P1..P5")
        for r in body.get("responders", []):
            if not isinstance(r, dict) or r.get("type") not in ("team", "user", "escalation", "schedule"):
                errors.append("responders[] need a type")
        return errors

    async def create(self, request: web.Request) -> web.Response:
        if not self._auth(request):
            return web.json_response({"message": "Could not authenticate"}, status=401)
        body = await request.json()
        errors = self.validate(body)
        if errors:
            self.reject(body, errors)
            return web.json_response({"message": "Request body is not processable", "errors": errors},
                                     status=422)
        self.got.accepted.append(body)
        alias = body.get("alias") or body["message"]
        alert = self.alerts.get(alias)
        if alert is None or alert["status"] == "closed":
            self.alerts[alias] = {"status": "open", "count": 1, "message": body["message"], "body": body}
        else:
            alert["count"] += 1
        return web.json_response({"result": "Request will be processed", "took": 0.01, "requestId": alias},
                                 status=202)

    async def close(self, request: web.Request) -> web.Response:
        if not self._auth(request):
            return web.json_response({"message": "Could not authenticate"}, status=401)
        if request.query.get("identifierType") != "alias":
            return web.json_response({"message": "identifierType must be alias here"}, status=422)
        body = await request.json() if request.can_read_body else {}
        errors: list[str] = []
        for key, limit in (("user", 100), ("source", 100), ("note", 25000)):
            _str(errors, body, key, max_len=limit)
        if errors:
            self.reject(body, errors)
            return web.json_response({"message": "invalid", "errors": errors}, status=422)
        alias = request.match_info["identifier"]
        self.got.accepted.append({"close": alias, **body})
        if alias in self.alerts:
            self.alerts[alias]["status"] = "closed"
        return web.json_response({"result": "Request will be processed", "took": 0.01, "requestId": alias},
                                 status=202)


# --- Slack ----------------------------------------------------------------------
class Slack(Receiver):
    def routes(self, app: web.Application) -> None:
        app.router.add_post("/services/T000/B000/XXXX", self.post)

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/services/T000/B000/XXXX"

    @staticmethod
    def _text(errors: list[str], obj: Any, where: str, limit: int, plain_only: bool = False) -> None:
        if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
            errors.append(f"{where}: text object needs type plain_text or mrkdwn")
            return
        if plain_only and obj["type"] != "plain_text":
            errors.append(f"{where}: must be plain_text")
        text = obj.get("text")
        if not isinstance(text, str) or not text:
            errors.append(f"{where}: text required")
        elif len(text) > limit:
            errors.append(f"{where}: text longer than {limit}")

    @classmethod
    def validate(cls, body: Any) -> list[str]:
        errors: list[str] = []
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return ["no_text"]
        blocks = body.get("blocks", [])
        if not isinstance(blocks, list) or len(blocks) > 50:
            return ["invalid_blocks: at most 50 blocks"]
        for n, b in enumerate(blocks):
            kind = b.get("type") if isinstance(b, dict) else None
            where = f"blocks[{n}]"
            if kind == "header":
                cls._text(errors, b.get("text"), where, 150, plain_only=True)
            elif kind == "section":
                if "text" not in b and "fields" not in b:
                    errors.append(f"{where}: section needs text or fields")
                if "text" in b:
                    cls._text(errors, b["text"], where, 3000)
                fields = b.get("fields", [])
                if len(fields) > 10:
                    errors.append(f"{where}: at most 10 fields")
                for f in fields:
                    cls._text(errors, f, f"{where}.fields", 2000)
            elif kind == "actions":
                elements = b.get("elements", [])
                if not elements or len(elements) > 25:
                    errors.append(f"{where}: 1..25 elements")
                for e in elements:
                    if e.get("type") != "button":
                        continue
                    cls._text(errors, e.get("text"), f"{where}.button", 75, plain_only=True)
                    url = e.get("url", "")
                    if not isinstance(url, str) or len(url) > 3000 or not url.startswith(("http://", "https://")):
                        errors.append(f"{where}.button: url must be http(s) and at most 3000 chars")
            elif kind == "context":
                elements = b.get("elements", [])
                if not elements or len(elements) > 10:
                    errors.append(f"{where}: 1..10 elements")
                for e in elements:
                    cls._text(errors, e, f"{where}.context", 3000)
            elif kind == "divider":
                pass
            else:
                errors.append(f"{where}: unknown block type {kind!r}")
        return errors

    async def post(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.Response(status=400, text="invalid_payload")
        errors = self.validate(body)
        if errors:
            self.reject(body, errors)
            return web.Response(status=400, text="invalid_blocks" if errors != ["no_text"] else "no_text")
        self.got.accepted.append(body)
        return web.Response(text="ok")


# --- Webhook --------------------------------------------------------------------
class Webhook(Receiver):
    def __init__(self, secret: str, max_skew_s: float = 300) -> None:
        super().__init__()
        self.secret = secret
        self.max_skew_s = max_skew_s
        self.headers: list[dict[str, str]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/hook", self.post)

    async def post(self, request: web.Request) -> web.Response:
        raw = await request.read()
        ts = request.headers.get("X-Pipesentry-Timestamp", "")
        sig = request.headers.get("X-Pipesentry-Signature", "")
        expected = "sha256=" + hmac.new(self.secret.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
        errors = []
        if not hmac.compare_digest(sig, expected):
            errors.append("bad signature")
        try:
            if abs(time.time() - float(ts)) > self.max_skew_s:
                errors.append("stale timestamp")
        except ValueError:
            errors.append("missing timestamp")
        if request.content_type != "application/json":
            errors.append("content type must be application/json")
        if errors:
            self.reject(raw, errors)
            return web.json_response({"errors": errors}, status=401)
        self.got.accepted.append(json.loads(raw))
        self.headers.append(dict(request.headers))
        return web.json_response({"ok": True})


# --- Elasticsearch 8 stand-in ---------------------------------------------------
ES_JSON = "application/vnd.elasticsearch+json;compatible-with=8"


class FakeElasticsearch(Receiver):
    """Checks what Elasticsearch 8 checks of the official client's requests."""

    def __init__(self) -> None:
        super().__init__()
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.templates: dict[str, Any] = {}
        self.fail_only = ("/_bulk",)  # deliveries fail; the sink's start (version, template) does not
        self.item_failures: dict[str, list[int]] = {}
        """_id -> statuses to answer for its next bulk items (then success)."""
        self.bulk_bodies: list[bytes] = []
        self.authorization: list[str] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.info)
        app.router.add_put("/_index_template/{name}", self.put_template)
        app.router.add_post("/_bulk", self.bulk)
        app.router.add_put("/_bulk", self.bulk)

    @staticmethod
    def _compat(value: str) -> bool:
        return "compatible-with=8" in value.replace(" ", "")

    def _check(self, request: web.Request, body_type: str | None) -> web.Response | None:
        accept = request.headers.get("Accept", "")
        if not self._compat(accept) or "vnd.elasticsearch+json" not in accept:
            return self._error(400, "media_type_header_exception", f"Accept {accept!r} lacks compatible-with=8")
        if body_type is not None:
            ctype = request.headers.get("Content-Type", "")
            if body_type not in ctype or not self._compat(ctype):
                return self._error(400, "media_type_header_exception", f"Content-Type {ctype!r} not accepted")
        return None

    @staticmethod
    def _error(status: int, kind: str, reason: str) -> web.Response:
        return web.json_response({"error": {"type": kind, "reason": reason}, "status": status}, status=status,
                                 headers={"X-Elastic-Product": "Elasticsearch"}, content_type=ES_JSON.split(";")[0])

    @staticmethod
    def _ok(body: Any, status: int = 200) -> web.Response:
        return web.Response(text=json.dumps(body), status=status,
                            headers={"X-Elastic-Product": "Elasticsearch", "Content-Type": ES_JSON})

    async def info(self, request: web.Request) -> web.Response:
        return self._ok({"name": "fake", "cluster_name": "fake", "version": {"number": "8.19.0"},
                         "tagline": "You Know, for Search"})

    async def put_template(self, request: web.Request) -> web.Response:
        bad = self._check(request, "vnd.elasticsearch+json")
        if bad:
            return bad
        body = await request.json()
        if "index_patterns" not in body or "template" not in body:
            return self._error(400, "action_request_validation_exception", "index_patterns and template required")
        self.templates[request.match_info["name"]] = body
        return self._ok({"acknowledged": True})

    async def bulk(self, request: web.Request) -> web.Response:
        bad = self._check(request, "vnd.elasticsearch+x-ndjson")
        if bad:
            return bad
        raw = await request.read()
        self.bulk_bodies.append(raw)
        self.authorization.append(request.headers.get("Authorization", ""))
        if not raw.endswith(b"\n"):
            return self._error(400, "illegal_argument_exception", "The bulk request must be terminated by a newline")
        lines = raw.split(b"\n")[:-1]
        items = []
        errors = False
        i = 0
        while i < len(lines):
            action = json.loads(lines[i])
            (op, meta), = action.items()
            if op not in ("index", "create"):
                return self._error(400, "illegal_argument_exception", f"unsupported op {op}")
            doc = json.loads(lines[i + 1])
            i += 2
            _id, index = meta.get("_id"), meta.get("_index")
            failures = self.item_failures.get(_id)
            if failures:
                status = failures.pop(0)
                errors = True
                items.append({op: {"_index": index, "_id": _id, "status": status,
                                   "error": {"type": "injected", "reason": f"injected {status}"}}})
                continue
            if op == "create" and (index, _id) in self.docs:
                errors = True
                items.append({op: {"_index": index, "_id": _id, "status": 409,
                                   "error": {"type": "version_conflict_engine_exception"}}})
                continue
            created = (index, _id) not in self.docs
            self.docs[(index, _id)] = doc
            items.append({op: {"_index": index, "_id": _id, "status": 201 if created else 200,
                               "result": "created" if created else "updated"}})
        return self._ok({"took": 1, "errors": errors, "items": items})
