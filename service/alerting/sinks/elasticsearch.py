"""Elasticsearch / OpenSearch record sink: bulk indexing with the official async clients.

``flavor`` picks the client: ``elasticsearch`` (the official client, which requires
the ``X-Elastic-Product`` header from the server) or ``opensearch`` (opensearch-py).

The official client declares a REST API major in its media types
(``compatible-with=N``, N = the client's own major) and Elasticsearch accepts only
its own major and the one before: a 9.x client is refused by Elasticsearch 8.
``compatible_with`` decides what the sink sends: ``auto`` (default) asks the server
its version before the first write (``GET /``; where that answers 405, as on the
integration-test distribution, ``GET /_nodes/_local``) and declares the server's
major, whatever client major is installed; a number pins it (checked against the
server). Both flavors index the alert document with ``_id`` =
alert id, so re-delivery never makes a second copy:

* ``mode: index`` (default): dated indices ``<prefix>-YYYY.MM.DD`` chosen by the
  alert's ``@timestamp`` and ``op_type: index`` (a re-sent alert overwrites
  itself; suppression count updates land on the same document);
* ``mode: datastream``: data stream ``<prefix>``, or with ``namespace`` set the
  ECS-named ``logs-pipesentry.alerts-<namespace>``, with ``op_type: create`` (data
  streams accept nothing else); a 409 means "already there" and counts as
  delivered, so count updates are not applied there. ``lifecycle_policy`` names
  the ILM policy the template attaches (Elasticsearch).

The index template (published in ``service/alerting/schemas/``) is installed
before the first bulk. Bulk items failing with 429/5xx are retried a few times
within a delivery; other item errors (mapping conflicts) go to the dead-letter
file; whole-request failures (node down, 429, 5xx) make the worker back off
with the batch still spooled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import ssl
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr, model_validator

from .base import Outcome, RawSink, SinkError, retriable_status, sink_error
from .registry import SinkContext, register_sink
from .settings import SinkSettings

log = logging.getLogger(__name__)


class ElasticsearchSinkSettings(SinkSettings):
    type: Literal["elasticsearch"] = "elasticsearch"
    flavor: Literal["elasticsearch", "opensearch"] = "elasticsearch"
    hosts: list[str] = Field(default_factory=lambda: ["http://localhost:9200"])
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_certs: str | None = None
    verify_certs: bool = True
    mode: Literal["index", "datastream"] = "index"
    """``index``: dated indices ``<prefix>-YYYY.MM.DD`` by alert time (updates allowed);
    ``datastream``: one data stream named ``<prefix>`` (create-only)."""
    index_prefix: str = "pipesentry-alerts"
    namespace: str | None = Field(default=None, pattern=r"^[a-z0-9_.]{1,100}$")
    """``mode: datastream`` only: write to the ECS-named data stream ``logs-pipesentry.alerts-<namespace>``
    (the data stream naming scheme ``<type>-<dataset>-<namespace>``) instead of ``index_prefix``."""
    lifecycle_policy: str | None = None
    """Elasticsearch: the ILM policy the template puts on new indices (``index.lifecycle.name``);
    the policy must exist (example: ``deploy/search/pipesentry-alerts-ilm-policy.json``). OpenSearch
    ISM policies attach themselves by their ``ism_template`` (``deploy/search/pipesentry-alerts-ism-policy.json``)."""
    batch_size: int = Field(default=4000, ge=1)
    """About 10 MB of alerts: inside the 5-15 MB bulk size Elasticsearch recommends."""
    linger_s: float = Field(default=0.5, ge=0, le=10)
    """Bulk requests are costly per request (the node syncs its translog for each): batch up."""
    install_template: bool = True
    request_timeout_s: float = Field(default=30.0, gt=0)
    parallel_bulks: int = Field(default=2, ge=1, le=8)
    """Concurrent bulk requests per delivered batch (the node indexes them on separate threads)."""
    item_retries: int = Field(default=3, ge=0)
    """Retries of retriable bulk items (429/5xx) within one delivery before backing off."""
    refresh: bool = False
    compatible_with: Literal["auto", 7, 8, 9] = "auto"
    """REST API major declared to Elasticsearch (``compatible-with=N`` media types): ``auto``
    = the server's major, detected before the first write; a number pins it."""

    @model_validator(mode="after")
    def _ca_certs_need_https(self) -> ElasticsearchSinkSettings:
        # Hosts are not echoed: a host URL may carry user:password.
        if self.ca_certs and not all(h.lower().startswith("https://") for h in self.hosts):
            raise ValueError("ca_certs is set but not every host is https://; the CA is only used over TLS")
        return self


_COMPAT = re.compile(r"compatible-with=\d+")
_COMPAT_MEDIA = re.compile(r"application/vnd\.elasticsearch\+([\w-]+); ?compatible-with=\d+")


@cache
def compat_transport_class() -> type[Any]:
    """An ``elastic_transport.AsyncTransport`` that rewrites the declared REST API major.

    ``compat_major`` None: as the client sends it; 0: plain ``application/json`` media types (what
    any server major accepts, for the version probe); N: ``compatible-with=N``.
    """
    from elastic_transport import AsyncTransport, HttpHeaders

    class CompatTransport(AsyncTransport):
        compat_major: int | None = None

        async def perform_request(  # type: ignore[override]  # (AsyncTransport's own override is async)
            self, method: str, target: str, **kwargs: Any
        ) -> Any:
            headers = kwargs.get("headers")
            if self.compat_major is not None and isinstance(headers, Mapping) and headers:
                headers = HttpHeaders(headers)
                for key in ("accept", "content-type"):
                    value = headers.get(key)
                    if value:
                        headers[key] = (_COMPAT_MEDIA.sub(r"application/\1", value) if self.compat_major == 0
                                        else _COMPAT.sub(f"compatible-with={self.compat_major}", value))
                kwargs["headers"] = headers
            return await super().perform_request(method, target, **kwargs)

    return CompatTransport


def accepted_majors(server_major: int) -> tuple[int, int]:
    """The REST API majors Elasticsearch ``server_major`` accepts: its own and the previous one."""
    return server_major - 1, server_major


def load_mappings() -> dict[str, Any]:
    text = resources.files("service.alerting").joinpath("schemas/alert-mappings.json").read_text()
    mappings: dict[str, Any] = json.loads(text)
    return mappings


DATA_STREAM_DATASET = "logs-pipesentry.alerts"
"""``<type>-<dataset>`` of the ECS-named data stream; ``-<namespace>`` completes it."""


def base_name(settings: ElasticsearchSinkSettings) -> str:
    """The data stream (``mode: datastream``) or the dated indices' prefix (``mode: index``)."""
    if settings.mode == "datastream" and settings.namespace:
        return f"{DATA_STREAM_DATASET}-{settings.namespace}"
    return settings.index_prefix


def index_template(settings: ElasticsearchSinkSettings) -> dict[str, Any]:
    base = base_name(settings)
    index_settings: dict[str, Any] = {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"}
    if settings.lifecycle_policy and settings.flavor == "elasticsearch":
        index_settings["index.lifecycle.name"] = settings.lifecycle_policy
    body: dict[str, Any] = {
        "index_patterns": [f"{base}*" if settings.mode == "datastream" else f"{base}-*"],
        "priority": 200,
        "template": {"settings": index_settings, "mappings": load_mappings()},
        "_meta": {"managed_by": "pipesentry"},
    }
    if settings.mode == "datastream":
        body["data_stream"] = {}
    return body


def without_wildcard(mappings: Any) -> Any:
    """``mappings`` with every ``wildcard`` field as ``keyword`` (``ignore_above`` 8191): for nodes
    without the wildcard field type (OpenSearch before 2.15, Elasticsearch distributions without
    the x-pack ``wildcard`` module, such as the integration-test zip)."""
    if isinstance(mappings, dict):
        if mappings.get("type") == "wildcard":
            return {**mappings, "type": "keyword", "ignore_above": 8191}
        return {k: without_wildcard(v) for k, v in mappings.items()}
    return mappings


def _no_wildcard_type(exc: BaseException) -> bool:
    """A 400 saying the node has no ``wildcard`` field type: OpenSearch ("no handler for type"),
    Elasticsearch without the x-pack wildcard module ("the mapper type [wildcard] ... does not exist")."""
    text = repr(exc).lower()
    return _status(exc) == 400 and ("no handler for type [wildcard]" in text
                                    or ("mapper type [wildcard]" in text and "does not exist" in text))


def target_index(settings: ElasticsearchSinkSettings, doc: dict[str, Any]) -> str:
    if settings.mode == "datastream":
        return base_name(settings)
    day = str(doc.get("@timestamp", ""))[:10].replace("-", ".") or "undated"
    return f"{settings.index_prefix}-{day}"


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        meta = getattr(exc, "meta", None)
        status = getattr(meta, "status", None)
    return status if isinstance(status, int) else None


class ElasticsearchSink(RawSink):
    kind = "record"

    def __init__(self, settings: ElasticsearchSinkSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.client: Any = None
        self._template_ready = not settings.install_template
        self._version_known = settings.flavor == "opensearch"
        self.server_version: str | None = None
        self.compat_major: int | None = None
        self.op_type = "create" if settings.mode == "datastream" else "index"

    def _make_client(self) -> Any:
        """The async client; a ``ca_certs`` that is not a readable PEM file of certificates is a
        ValueError naming it (the client libraries would say "not a path" or raise an SSLError)."""
        s = self.settings
        if s.ca_certs and not (os.path.isfile(s.ca_certs) and os.access(s.ca_certs, os.R_OK)):
            raise ValueError(f"{s.name}: ca_certs {s.ca_certs!r} is not a readable file")
        try:
            return self._new_client()
        except ssl.SSLError as exc:
            raise ValueError(f"{s.name}: ca_certs {s.ca_certs!r} holds no usable CA certificate: "
                             f"{exc.reason or exc}") from exc

    def _new_client(self) -> Any:
        s = self.settings
        if s.flavor == "opensearch":
            from opensearchpy import AsyncOpenSearch

            kwargs: dict[str, Any] = {"hosts": s.hosts, "timeout": s.request_timeout_s, "max_retries": 0,
                                      "verify_certs": s.verify_certs}
            if s.username and s.password:
                kwargs["http_auth"] = (s.username, s.password.get_secret_value())
            if s.api_key:
                kwargs["headers"] = {"Authorization": f"ApiKey {s.api_key.get_secret_value()}"}
            if s.ca_certs:
                kwargs["ca_certs"] = s.ca_certs
            if any(h.startswith("https") for h in s.hosts):
                kwargs["use_ssl"] = True
            return AsyncOpenSearch(**kwargs)
        from elasticsearch import AsyncElasticsearch

        ekw: dict[str, Any] = {"hosts": s.hosts, "request_timeout": s.request_timeout_s, "max_retries": 0,
                               "retry_on_timeout": False, "transport_class": compat_transport_class()}
        if s.api_key:
            ekw["api_key"] = s.api_key.get_secret_value()
        elif s.username and s.password:
            ekw["basic_auth"] = (s.username, s.password.get_secret_value())
        if s.ca_certs:
            ekw["ca_certs"] = s.ca_certs
        if any(h.startswith("https") for h in s.hosts):
            ekw["verify_certs"] = s.verify_certs
        return AsyncElasticsearch(**ekw)

    async def start(self) -> None:
        if self.client is None:
            self.client = self._make_client()
        try:
            await self._ensure_template()
        except SinkError as exc:  # node down at start: spool now, install before the first bulk
            log.warning("index template not installed yet", extra={"sink": self.name, "error": str(exc)})

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def _server_version(self) -> str | None:
        """The server's version number: ``GET /``, else ``GET /_nodes/_local`` (None if neither says)."""
        from elasticsearch import ApiError

        try:
            info = await self.client.info()
            return str(info["version"]["number"])
        except ApiError as exc:  # the integration-test distribution answers 405 to GET /
            log.info("GET / refused, asking /_nodes/_local for the version",
                     extra={"sink": self.name, "status": _status(exc)})
        try:
            nodes = await self.client.nodes.info(node_id="_local", filter_path="nodes.*.version")
            versions = {str(n["version"]) for n in dict(nodes.body).get("nodes", {}).values()}
            return versions.pop() if len(versions) == 1 else None
        except ApiError as exc:  # no `monitor` privilege: keep the client's own major
            log.warning("server version unknown, keeping the client's compatible-with",
                        extra={"sink": self.name, "status": _status(exc)})
            return None

    async def _ensure_compat(self) -> None:
        """Detect the server version once and declare a REST API major it accepts."""
        if self._version_known:
            return
        transport = self.client.transport
        configured = self.settings.compatible_with
        transport.compat_major = 0  # probe with plain JSON: every major answers that
        try:
            version = await self._server_version()
        except Exception as exc:
            transport.compat_major = None if configured == "auto" else configured
            raise sink_error(f"{self.name}: asking the server its version failed: {exc!r}", _status(exc)) from exc
        major = int(version.split(".")[0]) if version else None
        chosen = (major if configured == "auto" else configured) if major or configured != "auto" else None
        if major is not None and chosen not in accepted_majors(major):
            transport.compat_major = None
            raise SinkError(f"{self.name}: compatible_with={configured} but the server is Elasticsearch {version}, "
                            f"which accepts compatible-with {' or '.join(map(str, accepted_majors(major)))}")
        transport.compat_major = chosen
        self.server_version, self.compat_major = version, chosen
        self._version_known = True
        log.info("elasticsearch server detected", extra={"sink": self.name, "server_version": version,
                                                         "compatible_with": chosen})

    async def _ensure_template(self) -> None:
        await self._ensure_compat()
        if self._template_ready:
            return
        name = f"{base_name(self.settings)}-template"
        body = index_template(self.settings)
        try:
            try:
                await self._put_template(name, body)
            except Exception as exc:
                if not _no_wildcard_type(exc):
                    raise
                log.warning("the node has no wildcard field type: command lines and URLs are mapped as keyword",
                            extra={"sink": self.name})
                await self._put_template(name, without_wildcard(body))
        except Exception as exc:
            raise sink_error(f"{self.name}: installing index template failed: {exc!r}", _status(exc)) from exc
        self._template_ready = True

    async def _put_template(self, name: str, body: dict[str, Any]) -> None:
        if self.settings.flavor == "opensearch":
            await self.client.indices.put_index_template(name=name, body=body)
        else:
            await self.client.indices.put_index_template(
                name=name, index_patterns=body["index_patterns"], priority=body["priority"],
                template=body["template"], data_stream=body.get("data_stream"), meta=body["_meta"])

    def encode(self, doc: dict[str, Any]) -> bytes:
        """The spooled form for this sink: the bulk action line and the document,
        so delivery joins bytes instead of decoding and re-encoding JSON."""
        action = {self.op_type: {"_index": target_index(self.settings, doc), "_id": doc["event"]["id"]}}
        return orjson.dumps(action) + b"\n" + orjson.dumps(doc) + b"\n"

    async def _bulk(self, body: bytes) -> dict[str, Any]:
        refresh = "true" if self.settings.refresh else None
        if self.settings.flavor == "opensearch":
            kwargs: dict[str, Any] = {"body": body}
            if refresh:
                kwargs["refresh"] = refresh
            resp = await self.client.bulk(**kwargs)
        else:
            resp = await self.client.bulk(operations=body, refresh=refresh)
            resp = resp.body
        return dict(resp)

    async def deliver(self, records: list[dict[str, Any]]) -> Outcome:
        return await self.deliver_raw([self.encode(doc) for doc in records])

    @staticmethod
    def _doc(pair: bytes) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = orjson.loads(pair.split(b"\n", 1)[1])
            return doc
        except (IndexError, orjson.JSONDecodeError):
            return {"raw": pair.decode("utf-8", "replace")}

    def _chunks(self, pairs: list[bytes], pending: list[int]) -> list[list[int]]:
        """Split for ``parallel_bulks`` concurrent requests. Pairs for the same alert
        (identical action lines) share a chunk, so an update cannot overtake its original."""
        k = min(self.settings.parallel_bulks, max(1, len(pending) // 200))
        if k <= 1:
            return [pending]
        chunks: list[list[int]] = [[] for _ in range(k)]
        for i in pending:
            chunks[hash(pairs[i][: pairs[i].index(b"\n")]) % k].append(i)
        return [c for c in chunks if c]

    async def deliver_raw(self, pairs: list[bytes]) -> Outcome:
        """Bulk-index spooled action/document pairs (see :meth:`encode`)."""
        try:
            await self._ensure_template()
        except SinkError as exc:
            return Outcome(done=0, error=exc)
        pending = list(range(len(pairs)))
        rejected: dict[int, str] = {}
        failed_retriable: dict[int, str] = {}
        for attempt in range(self.settings.item_retries + 1):
            failed_retriable = {}
            chunks = self._chunks(pairs, pending)
            responses = await asyncio.gather(*(self._bulk(b"".join(pairs[i] for i in chunk)) for chunk in chunks),
                                             return_exceptions=True)
            for chunk, resp in zip(chunks, responses, strict=True):
                if isinstance(resp, BaseException):
                    if not isinstance(resp, Exception):
                        raise resp
                    failed_retriable.update((i, f"bulk failed: {resp!r}") for i in chunk)
                    continue
                items = resp.get("items", [])
                if len(items) != len(chunk):
                    failed_retriable.update((i, f"bulk answered {len(items)} items for {len(chunk)}") for i in chunk)
                    continue
                for i, item in zip(chunk, items, strict=True):
                    (op, result), = item.items()
                    status = int(result.get("status", 500))
                    if status < 300 or (status == 409 and op == "create"):
                        continue  # 409 on create: the alert is already there
                    reason = json.dumps(result.get("error"))[:500]
                    if retriable_status(status):
                        failed_retriable[i] = f"HTTP {status}: {reason}"
                    else:
                        rejected[i] = f"HTTP {status}: {reason}"
            if not failed_retriable or any(r.startswith("bulk failed") for r in failed_retriable.values()):
                break  # done, or a request failed whole (node down?): back off in the worker, not here
            pending = sorted(failed_retriable)
            if attempt < self.settings.item_retries:
                await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))
        done = min(failed_retriable) if failed_retriable else len(pairs)
        out = Outcome(done=done, rejected=[(self._doc(pairs[i]), r) for i, r in sorted(rejected.items()) if i < done])
        if failed_retriable:
            out.error = SinkError(f"{self.name}: {len(failed_retriable)} bulk items still failing: "
                                  f"{failed_retriable[done]}")
        return out


def build(settings: ElasticsearchSinkSettings, context: SinkContext) -> ElasticsearchSink:
    return ElasticsearchSink(settings)


register_sink("elasticsearch", ElasticsearchSinkSettings, build)
