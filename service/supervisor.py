"""Supervision of the service's background tasks: no task dies silently.

A background task (a sink's delivery loop, an input, the router's ticker, the
rules watcher) that raises is logged at once with its name, counted in
``pipesentry_task_restarts_total{task}``, marked down in
``pipesentry_task_up{task}`` (0 only while crashed; the series goes away when a
task finishes or is stopped) and restarted after a capped exponential backoff
(reset once a run lasted ``stable_s``). A task whose coroutine returns is
finished, not restarted: inputs return when asked to stop or at end of input.
Cancellation is never a crash. :meth:`Supervisor.down` names the tasks waiting
to restart, which readiness reports; ``on_crash``/``on_start`` hooks let the
owner reflect the state elsewhere (``pipesentry_sink_up``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from service import metrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TaskState:
    name: str
    running: bool = False
    finished: bool = False
    restarts: int = 0
    last_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    """Runs named coroutine factories and restarts them when they raise."""

    def __init__(self, *, initial_backoff_s: float = 0.5, max_backoff_s: float = 30.0, stable_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_s = stable_s
        self._clock = clock
        self._tasks: dict[str, TaskState] = {}
        self._closing = False
        self._closed = asyncio.Event()

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]], *,
              on_crash: Callable[[BaseException], None] | None = None,
              on_start: Callable[[], None] | None = None,
              restart: Callable[[], bool] | None = None) -> asyncio.Task[None]:
        """Start ``factory()`` under supervision as an asyncio task named ``name``.

        ``restart`` (default: always) is asked after a crash; False leaves the
        task down (for example while the service is stopping)."""
        old = self._tasks.get(name)
        if old is not None and old.task is not None and not old.task.done():
            raise RuntimeError(f"task {name} is already supervised")
        state = TaskState(name)
        self._tasks[name] = state
        state.task = asyncio.get_running_loop().create_task(
            self._supervise(state, factory, on_crash, on_start, restart), name=name)
        return state.task

    async def _supervise(self, state: TaskState, factory: Callable[[], Awaitable[None]],
                         on_crash: Callable[[BaseException], None] | None, on_start: Callable[[], None] | None,
                         restart: Callable[[], bool] | None) -> None:
        up = metrics.TASK_UP.labels(task=state.name)
        attempt = 0
        try:
            while True:
                state.running = True
                up.set(1)
                if on_start is not None:
                    on_start()
                started = self._clock()
                try:
                    await factory()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    state.running = False
                    up.set(0)
                    state.restarts += 1
                    state.last_error = repr(exc)
                    metrics.TASK_RESTARTS.labels(task=state.name).inc()
                    if self._clock() - started >= self.stable_s:
                        attempt = 0
                    delay = min(self.max_backoff_s, self.initial_backoff_s * (2 ** min(attempt, 30)))
                    attempt += 1
                    again = self._restart_allowed(restart)
                    log.error("background task crashed", exc_info=exc, extra={
                        "task": state.name, "error": state.last_error, "restarts": state.restarts,
                        "restart_in_s": round(delay, 3) if again else None})
                    if on_crash is not None:
                        try:
                            on_crash(exc)
                        except Exception:
                            log.exception("crash hook failed", extra={"task": state.name})
                    if again:
                        with contextlib.suppress(TimeoutError):  # close() cuts the wait short
                            await asyncio.wait_for(self._closed.wait(), delay)
                    if not again or not self._restart_allowed(restart):
                        state.finished = True
                        return
                    continue
                state.finished = True
                state.last_error = None
                return
        finally:
            state.running = False
            if state.last_error is None:  # finished or stopped: no series left that reads as "down"
                with contextlib.suppress(KeyError):
                    metrics.TASK_UP.remove(state.name)
            else:
                up.set(0)

    # --- state -------------------------------------------------------------------
    def down(self) -> list[str]:
        """Tasks that crashed and are not running (waiting to restart, or given up)."""
        return sorted(s.name for s in self._tasks.values() if not s.running and s.last_error is not None)

    def state(self, name: str) -> TaskState | None:
        return self._tasks.get(name)

    def status(self) -> dict[str, dict[str, object]]:
        return {s.name: {"running": s.running, "finished": s.finished, "restarts": s.restarts,
                         "last_error": s.last_error} for s in self._tasks.values()}

    def forget(self, name: str) -> None:
        """Drop a task that was stopped on purpose (a sink removed by a reload)."""
        state = self._tasks.pop(name, None)
        if state is not None and state.task is not None and state.task.done():
            with contextlib.suppress(KeyError):
                metrics.TASK_UP.remove(name)

    def _restart_allowed(self, restart: Callable[[], bool] | None) -> bool:
        return not self._closing and (restart is None or restart())

    def reopen(self) -> None:
        """Allow restarts again after :meth:`close` (a component started anew)."""
        self._closing = False
        self._closed.clear()

    def close(self) -> None:
        """From now on a crash is logged and counted but not restarted (shutdown);
        tasks waiting to restart finish at once."""
        self._closing = True
        self._closed.set()
