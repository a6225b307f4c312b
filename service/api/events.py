"""``POST /api/v1/events``: HTTP ingest of NDJSON or a JSON array, answered once alerts are accepted.

The route is the HTTP input's driver: the body becomes one batch
(:class:`~service.sources.http.HttpInput`) run through the pipeline core by
:func:`~service.pipeline.run_batch`, and the response is its acknowledgement.
A 200 means every alert raised by the accepted events is durably with the
alert router. The caller's rate limit (:mod:`service.api.ratelimit`) is checked
before the body is parsed (429 with ``Retry-After``); the body is split
cooperatively and decoded and detected in a worker thread, so a large request
does not hold up the event loop. A 503 means it could not take them: nothing is lost, the client
retries, and the retry yields the same alert ids (see ``service.sources.http``).

The content type says how the body is split (NDJSON: line by line, even a line starting with
``[``; JSON: an array or one object) and ``Content-Encoding: gzip`` is decompressed within the
body limit (:mod:`service.api.content`); other types and encodings are a 415. Rejected elements
and lines are listed in the answer by their position in the body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from detectors.model import LogSource
from service import metrics
from service.api.content import BodyRefused, decoded_body, header, split_mode
from service.api.context import ApiContext
from service.api.principal import principal_of
from service.api.ratelimit import IngestLimiter
from service.api.roles import Role, requires
from service.pipeline import IngestResult, run_batch
from service.sources.base import InputSpec
from service.sources.http import HttpInput, IngestError, ParsedBody

log = logging.getLogger(__name__)


def events_router(ctx: ApiContext, limiter: IngestLimiter) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["ingest"])
    settings = ctx.settings
    source = HttpInput(InputSpec.from_settings("http", settings.http_ingest, settings.events.timestamp_fields),
                       settings.http_ingest.max_events)
    decoder_name = settings.http_ingest.decoder.type
    max_body = settings.http_ingest.max_body_bytes

    @router.post("/events", dependencies=[requires(Role.INGEST)], summary="Ingest events (NDJSON or JSON array)",
                 responses={400: {"description": "the body holds no usable event"},
                            413: {"description": "the body (decompressed, for gzip) exceeds the limit"},
                            415: {"description": "content type or content encoding not accepted"},
                            503: {"description": "alerts not accepted"}})
    async def ingest(request: Request,
                     product: str | None = Query(default=None), category: str | None = Query(default=None),
                     service: str | None = Query(default=None)) -> Response:
        pipeline = ctx.pipeline
        if pipeline is None:
            return JSONResponse({"detail": "HTTP ingest is disabled"}, status_code=404)
        caller = principal_of(request).name
        headers = request.scope.get("headers", ())
        try:
            mode = split_mode(header(headers, b"content-type"), decoder_name)
            body = await request.body()
            encoding = header(headers, b"content-encoding")
            if encoding is not None:
                body = await asyncio.to_thread(decoded_body, body, encoding, max_body)
        except BodyRefused as exc:
            metrics.HTTP_REJECTED.labels(exc.reason).inc()
            return JSONResponse({"detail": str(exc)}, status_code=exc.status)
        wait = limiter.admit(caller, len(body))
        if wait:
            metrics.HTTP_RATE_LIMITED.labels(caller).inc()
            return JSONResponse({"detail": f"ingest rate limit of token {caller!r} reached; retry in {wait} s"},
                                status_code=429, headers={"Retry-After": str(wait)})
        try:
            parsed = await source.parse(body, time.time(), mode)
        except IngestError as exc:
            metrics.HTTP_REJECTED.labels("invalid").inc()
            if exc.reason != "invalid":  # the body's one document is the rejected message
                metrics.MESSAGES_REJECTED.labels(source.name, exc.reason).inc()
            return JSONResponse({"detail": str(exc), "reason": exc.reason}, status_code=400)
        for reason, count in Counter(reason for _, reason, _ in parsed.errors).items():
            metrics.MESSAGES_REJECTED.labels(source.name, reason).inc(count)
        batch = source.batch_of(parsed, LogSource(product, category, service) if product or category or service
                                else None)
        limiter.charge_events(caller, len(batch.messages) + len(parsed.errors))
        if batch.messages:
            result = await run_batch(pipeline, source.name, batch)
        else:
            result = IngestResult(0, [], [], time.perf_counter())
        if result is None:
            return JSONResponse({"detail": "alerts could not be accepted; retry the request"}, status_code=503)
        status, answer = await asyncio.to_thread(_answer, parsed, result)  # 100,000 rejects: not on the loop
        if status == 400:
            metrics.HTTP_REJECTED.labels("invalid").inc()
        return Response(answer, status_code=status, media_type="application/json")

    return router


def _answer(parsed: ParsedBody, result: IngestResult) -> tuple[int, bytes]:
    """The response to an accepted batch: 200, or 400 when no event of it could be read.

    ``index`` in ``rejected`` is the element's (or non-blank line's) position in the body."""
    index = {id(m): parsed.positions[i] for i, m in enumerate(parsed.messages)}
    rejected: list[dict[str, Any]] = [
        {"index": index.get(id(r.message)), "reason": r.reason, "error": r.error} for r in result.rejected]
    rejected += [{"index": i, "reason": reason, "error": error} for i, reason, error in parsed.errors]
    rejected.sort(key=lambda r: r["index"] if r["index"] is not None else -1)
    if rejected and not result.accepted:
        return 400, orjson.dumps({"detail": "no event of the body could be read", "accepted": 0,
                                  "rejected": rejected, "alerts": []})
    return 200, orjson.dumps({"accepted": result.accepted, "rejected": rejected,
                              "alerts": [{"id": a.id, "rule_id": a.rule.id, "title": a.rule.title,
                                          "level": a.level} for a in result.alerts]})
