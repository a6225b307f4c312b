"""The native screen in front of decoding, for every input: which inputs it may clear, and the
order in which its verdicts become detector items.

The screen (:mod:`detectors.sigma.screen`) reads raw JSON and names the messages some rule
might match; the rest are cleared without being decoded. Stateful detectors still see time
pass: each run of cleared messages becomes one :class:`~service.sources.base.Tick` at the
run's latest event time, in message order between the decoded ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from detectors.model import Origin
from detectors.sigma.compiled import CompiledRule
from detectors.sigma.screen import Decision, Screen
from service.decoders.json import JsonObjectDecoder
from service.sources.base import Decoded, InputSpec, RawMessage, Tick, decode_batch

Screening = tuple[Screen, list[str] | None, int, int]
"""An input's native screen with its time fields (None: time not needed), max bytes and depth."""
ScreenResult = tuple[list[int], list[float], list[Decision | None], tuple[CompiledRule, ...]]
"""Positions to decode, the latest event time of each cleared run, each decoded position's
decision, and the rules the decisions name (see ``Screen.decide``)."""


def screening_for(spec: InputSpec, current: Any, max_bytes: int | None = None) -> Screening | None:
    """How to screen an input's messages under the detection set ``current``, or None: decode all.

    Only plain JSON objects are screened, and only inputs no anomaly check watches (those look
    at every event, matching or not). ``max_bytes``: the input's own size limit, if tighter
    than the decoder's.
    """
    decoder = spec.decoder
    if type(decoder) is not JsonObjectDecoder:
        return None
    if current.anomaly is not None and current.anomaly.watches(spec.logsource):
        return None
    screen = current.ruleset.screen(spec.logsource)
    if screen is None:
        return None
    time_fields = list(spec.time_fields) if current.stateful else None
    limit = decoder.max_bytes if max_bytes is None else min(max_bytes, decoder.max_bytes)
    return screen, time_fields, limit, decoder.max_depth


def merge(result: ScreenResult, count: int, timed: bool, decode: Callable[[Sequence[int]], int],
          tick: Callable[[int, float], None]) -> int:
    """Hand a screen result over ``count`` messages to the input, in message order: ``decode``
    the picked positions (it returns the events it read) and, when stateful detectors need time
    (``timed``), ``tick`` once per cleared run with its last position and latest event time.
    Returns the number of events: cleared plus decoded."""
    picked, latest = result[0], result[1]
    cleared = count - len(picked)
    if not timed:
        return cleared + decode(picked)
    decoded = 0
    for run, ts in enumerate(latest):
        if ts == ts:  # not NaN: the run before this position was not empty
            tick((picked[run] if run < len(picked) else count) - 1, ts)
        if run < len(picked):
            decoded += decode(picked[run:run + 1])
    return cleared + decoded


def decode_screened(result: ScreenResult, count: int, spec: InputSpec, decoded: Decoded, timed: bool,
                    messages_at: Callable[[Sequence[int]], Sequence[RawMessage]],
                    origin_at: Callable[[int], Origin | tuple[str, int, int]], max_bytes: int | None = None,
                    partition: tuple[str, int] | None = None, lean: bool = False) -> int:
    """The step after the screen, for every input: decode (with :func:`decode_batch`) the ``count``
    messages' picked positions into ``decoded`` and, when stateful detectors need time (``timed``),
    add one :class:`Tick` per cleared run at ``origin_at`` its last position. Messages are built
    only for the picked positions (``messages_at``): most are cleared. ``partition``: they are
    Kafka records (see :func:`decode_batch`); ``lean``: events the decisions need not read are left
    undecoded (``decode_batch``'s ``lean``). Returns the number of events."""
    items = decoded.items
    picked, _, decisions, rules = result
    by_position: dict[int, Decision | None] = {}

    def decode(positions: Sequence[int]) -> int:
        before = len(items)
        chosen: Sequence[Decision | None] | None = None
        if rules:  # each message's decision goes to the item it decodes into
            if positions is picked:
                chosen = decisions
            else:
                if not by_position:
                    by_position.update(zip(picked, decisions, strict=True))
                chosen = [by_position[position] for position in positions]
        decode_batch(messages_at(positions), spec, decoded, max_bytes=max_bytes, partition=partition,
                     decisions=chosen, rules=rules, lean=lean)
        return len(items) - before

    def tick(position: int, ts: float) -> None:
        items.append(Tick(origin_at(position), spec.logsource, ts))

    return merge(result, count, timed, decode, tick)
