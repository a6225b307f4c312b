"""Who changed what: one entry per state-changing action, in the store and on ``pipesentry.audit``.

An entry carries the actor (the token's or client certificate's configured name,
never a credential; ``system`` for file-watch and SIGHUP reloads), the role, how
the caller was identified, the client address, the time, the action (a fixed
dotted word such as ``silence.create``), the object acted on, the outcome and a
small ``detail`` mapping of counts and results. Request bodies are never
recorded. Recording never fails the action: a store error is logged and counted
(``pipesentry_audit_write_failures_total``) and the log line is still written.

On the event loop the row is written in a worker thread (the store's lock may be
held by the store sink writing a batch, and a flood of refused sign-ins must not
stall the loop); :meth:`AuditTrail.flush` waits for those writes (the audit
query and shutdown call it), so a read sees every entry recorded before it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from service import metrics
from service.alerting.store import AlertStore, StoreError
from service.audit.store import AuditQuery, AuditStore
from service.config import AuditSettings
from service.waits import stopped_within

log = logging.getLogger(__name__)
AUDIT_LOG = logging.getLogger("pipesentry.audit")
"""The dedicated logger: route or ship it separately (``logging.getLogger("pipesentry.audit")``)."""

SYSTEM = "system"
OUTCOMES = ("ok", "rejected", "denied", "failed")
MAX_OBJECT = 200
"""Characters of an entry's object kept (a refused request's path is the caller's to choose)."""


def outcome_of(status: int) -> str:
    """An HTTP status as an audit outcome: 2xx/3xx ok, 401/403 denied, other 4xx rejected, 5xx failed."""
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    return "rejected" if status < 500 else "failed"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    time: float
    actor: str
    role: str
    via: str
    client: str | None
    action: str
    object: str | None
    outcome: str
    status: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["detail"] = dict(self.detail)
        return doc


class AuditTrail:
    """Records entries; ``store`` ``None`` keeps the log line only (no ``GET /api/v1/audit`` history)."""

    def __init__(self, settings: AuditSettings, store: AlertStore | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._store = AuditStore(store) if store is not None and settings.enabled else None
        self._clock = clock
        self._pending: set[asyncio.Future[None]] = set()

    @property
    def queryable(self) -> bool:
        return self._store is not None

    def record(self, action: str, *, actor: str, role: str, via: str, client: str | None = None,
               obj: str | None = None, outcome: str = "ok", status: int | None = None,
               detail: Mapping[str, Any] | None = None) -> AuditEntry | None:
        """Write one entry (log line, counter, store row); ``None`` when the trail is off."""
        if not self.settings.enabled:
            return None
        if obj is not None and len(obj) > MAX_OBJECT:
            obj = obj[:MAX_OBJECT] + "..."
        entry = AuditEntry(time=self._clock(), actor=actor, role=role, via=via, client=client, action=action,
                           object=obj, outcome=outcome, status=status, detail=dict(detail or {}))
        doc = entry.as_dict()
        metrics.AUDIT_ENTRIES.labels(action, outcome).inc()
        AUDIT_LOG.info("audit", extra={k: v for k, v in doc.items() if k != "time"})
        if self._store is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._insert(doc)
            else:
                write = loop.run_in_executor(None, self._insert, doc)
                self._pending.add(write)
                write.add_done_callback(self._pending.discard)
        return entry

    def _insert(self, doc: dict[str, Any]) -> None:
        assert self._store is not None
        try:
            self._store.insert(doc)
        except Exception as exc:  # StoreError (counted by the store) or anything unexpected: never raised
            metrics.AUDIT_WRITE_FAILURES.inc()
            log.warning("audit entry not stored (it is in the audit log line)",
                        extra={"action": doc["action"], "reason": getattr(exc, "reason", type(exc).__name__)})

    async def flush(self) -> None:
        """Wait until every entry recorded so far is in the store (or has failed to be)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def system(self, action: str, *, obj: str | None = None, outcome: str = "ok",
               detail: Mapping[str, Any] | None = None) -> AuditEntry | None:
        """An action the service took by itself (a file-watch or SIGHUP reload)."""
        return self.record(action, actor=SYSTEM, role=SYSTEM, via="none", obj=obj, outcome=outcome, detail=detail)

    def query(self, q: AuditQuery) -> list[dict[str, Any]]:
        """Entries in the store, newest first (blocking: call :meth:`flush` first on the loop)."""
        if self._store is None:
            raise StoreError("the audit trail has no store (audit disabled or no local store)", "closed")
        return self._store.query(q)

    def prune(self, now: float | None = None) -> int:
        """Delete entries older than ``audit.retention_days``."""
        if self._store is None:
            return 0
        now = self._clock() if now is None else now
        removed = self._store.prune(now - self.settings.retention_days * 86_400)
        if removed:
            metrics.AUDIT_PRUNED.inc(removed)
            log.info("audit entries pruned", extra={"removed": removed,
                                                    "retention_days": self.settings.retention_days})
        return removed

    async def prune_loop(self, stop: asyncio.Event) -> None:
        """Prune now and every ``audit.prune_interval_s`` until ``stop`` (a supervised task)."""
        while True:
            try:
                await self.flush()
                await asyncio.to_thread(self.prune)
            except StoreError as exc:  # the store reports and counts it; try again next round
                log.warning("audit prune failed", extra={"reason": exc.reason})
            if await stopped_within(stop, self.settings.prune_interval_s):
                return
