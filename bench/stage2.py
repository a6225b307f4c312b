"""Stage 2 of ``state.scope: keyed`` in process (issue 18): CPU per state record, no broker.

    python bench/stage2.py [--events 50000] [--rounds 5] [--json F]

``bench/scale.py`` measures whole processes over Kafka; this isolates the detector's own share, so a
change to stage 2's hot path shows in seconds and with little noise (CPU time, not wall clock):

1. the correlation-heavy mix of ``bench/scale.py`` (the demo corpus with failed SSH and application
   logins woven in), ``--partitions`` input partitions per topic, goes once through a stage-1
   :class:`~service.detection.Detector` (``scope="keyed"``) in batches of ``--batch`` events; its
   state records are packed onto an in-memory internal topic as stage 1 sends them
   (``tests/support/internal_topic.py``), each batch followed by its watermark, and a final
   watermark past the backlog releases the last records;
2. ``stage1_build_us``: the record builds of that run (``_emit_records``/``_emit_anomaly``, every
   call recorded) replayed on a warm keyed detector, CPU per record built; ``stage1_encode_us``:
   encoding the records and finding their internal partitions (``encode``, and
   ``StateRecordProducer._partition`` with a fresh cache per round), per record;
3. ``stage2_us``: per round a fresh :class:`~service.keyed.stage2.KeyedDetector` reads the whole
   internal topic as its consumer would (decoder included: :func:`~service.sources.base.decode_batch`
   of ``--batch`` messages at a time) and sends the chained records it raises back through the
   topic until none is left; its CPU time over the state records read (watermarks left out);
4. ``digest``: a hash of the sorted alert ids stage 2 raised (the same in every round; a change to
   stage 2 that alters its alerts shows there), with their count; ``records_digest``: a hash of
   stage 1's encoded records, in order (a change to stage 1's records shows there).

Lanes: ``plain`` (the rules of ``sigma-rules/``, as ``bench/scale.py``) and ``checks`` (the same
with the demo's anomaly checks, ``service/demo/checks.yml``). Figures are the median over
``--rounds`` with min and max; the garbage collector has the CLI's thresholds (``service/gctune.py``).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scale import mix  # noqa: E402
from service.config import KafkaSettings, StateSettings  # noqa: E402
from service.demo.runner import DEMO_CHECKS  # noqa: E402
from service.demo.sources import BY_NAME  # noqa: E402
from service.detection import DetectionSet, Detector, compile_detection  # noqa: E402
from service.gctune import tune_thresholds  # noqa: E402
from service.keyed.records import Watermark  # noqa: E402
from service.keyed.stage1 import StateRecordProducer  # noqa: E402
from service.keyed.stage2 import KeyedDetector  # noqa: E402
from service.sources.base import Item, decode_batch  # noqa: E402
from tests.support.internal_topic import STAGE2, Message, Topic  # noqa: E402

RULES = ROOT / "sigma-rules"
INTERNAL = "state"
LATENESS_S = 2.0
"""``correlation.allowed_lateness`` of ``bench/scale.py``."""


def detection(checks: bool) -> DetectionSet:
    outcome = compile_detection([RULES], [], skip_invalid=True, anomaly_checks=[DEMO_CHECKS] if checks else [],
                                correlation_lateness_s=LATENESS_S)
    assert outcome.detection is not None
    return outcome.detection


def input_items(events: int, partitions: int, heavy_share: float, hosts: int, seed: int) -> list[Item]:
    """The mix as Kafka items: each source's topic, events round robin over its partitions."""
    offsets: dict[tuple[str, int], int] = {}
    count: dict[str, int] = {}
    items: list[Item] = []
    for ts, source, event in mix(events, heavy_share, hosts, seed):
        topic = BY_NAME[source].topic
        n = count[topic] = count.get(topic, -1) + 1
        tp = (topic, n % partitions)
        offset = offsets[tp] = offsets.get(tp, -1) + 1
        items.append(Item(event, (tp[0], tp[1], offset), BY_NAME[source].logsource, (), ts))
    return items


def watermark(topic: Topic, progress: dict[tuple[str, int], float], counts: dict[str, int]) -> None:
    data = Watermark("bench", tuple((t, p, ts) for (t, p), ts in sorted(progress.items())),
                     tuple(sorted(counts.items()))).encode()
    for p in range(len(topic.partitions)):
        topic.send(data, partition=p)


class Stage1:
    """One pass of stage 1 over the items: the internal topic, and every record build recorded."""

    def __init__(self, det: DetectionSet, items: Sequence[Item], partitions: int, batch: int) -> None:
        self.topic = Topic()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.records: list[Any] = []
        detector = Detector(det, scope="keyed")
        emit_records, emit_anomaly = detector._emit_records, detector._emit_anomaly

        def records(*args: Any) -> None:
            self.calls.append(("records", args))
            emit_records(*args)

        def anomaly(*args: Any) -> None:
            self.calls.append(("anomaly", args))
            emit_anomaly(*args)

        setattr(detector, "_emit_records", records)  # noqa: B010 (an instance attribute over the method)
        setattr(detector, "_emit_anomaly", anomaly)  # noqa: B010
        counts = dict.fromkeys((cast(tuple[str, int, int], item.origin_ref)[0] for item in items), partitions)
        marks: dict[tuple[str, int], float] = {}
        for start in range(0, len(items), batch):
            with detector.exclusive():
                detector.process(items[start:start + batch], now=0.0)
                found, progress = detector.take_records()
            self.records += found
            self.topic.send_records(found)
            marks.update(progress)
            watermark(self.topic, marks, counts)
        end = max(item.fallback_time for item in items) + 86_400.0
        watermark(self.topic, dict.fromkeys(marks, end), counts)
        self.detector = Detector(det, scope="keyed")

    def build_round(self) -> tuple[float, int]:
        """CPU seconds of replaying every record build, and the records built."""
        detector = self.detector
        detector.take_records()
        emit: dict[str, Any] = {"records": detector._emit_records, "anomaly": detector._emit_anomaly}
        calls = [(emit[kind], args) for kind, args in self.calls]
        gc.collect()
        start = time.process_time()
        for call, args in calls:
            call(*args)
        spent = time.process_time() - start
        return spent, len(detector.take_records()[0])

    def encode_round(self) -> float:
        """CPU seconds of what stage 1's producer does per record before the send: encode it and
        find its internal partition (a fresh producer: its key cache fills as in one run)."""
        sender = StateRecordProducer(KafkaSettings(bootstrap_servers=["x:9092"], topics={"t": {}}),
                                     StateSettings(scope="keyed", keyed_topic=INTERNAL), "bench")
        partition = sender._partition
        count = len(self.topic.partitions)
        gc.collect()
        start = time.process_time()
        for record in self.records:
            record.encode()
            partition(record, count)
        return time.process_time() - start


def stage2_round(det: DetectionSet, topic: Topic, batch: int) -> tuple[float, int, list[str]]:
    """CPU seconds of stage 2 over the topic (chained records sent back), state records read, alert ids."""
    topic = topic.copy()
    detector = KeyedDetector(det, lateness_s=LATENESS_S, rekey=True)
    start_at = [0] * len(topic.partitions)
    ids: list[str] = []
    records = 0
    gc.collect()
    start = time.process_time()
    while True:
        read = False
        for p, values in enumerate(topic.partitions):
            while start_at[p] < len(values):
                end = min(len(values), start_at[p] + batch)
                messages = [Message(values[offset], offset) for offset in range(start_at[p], end)]
                start_at[p] = end
                decoded = decode_batch(cast(Any, messages), STAGE2, None, partition=(INTERNAL, p))
                ids += [alert.id for alert in detector.process(decoded.items, now=0.0)]
                read = True
        chained, _ = detector.take_records()
        topic.send_records(chained)
        if not read:
            break
    spent = time.process_time() - start
    for values in topic.partitions:
        for value in values:
            records += sum(1 for line in value.split(b"\n") if b'"k":"w"' not in line)
    return spent, records, ids


def spread(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def run_lane(checks: bool, args: argparse.Namespace) -> dict[str, Any]:
    det = detection(checks)
    items = input_items(args.events, args.partitions, args.heavy_share, args.hosts, args.seed)
    first = Stage1(det, items, args.partitions, args.batch)
    stage2: list[float] = []
    build: list[float] = []
    encode: list[float] = []
    digests: set[str] = set()
    alerts = records = built = 0
    for _ in range(args.rounds):
        spent, records, ids = stage2_round(det, first.topic, args.batch)
        stage2.append(spent / records * 1e6)
        digests.add(hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16])
        alerts = len(ids)
        spent, built = first.build_round()
        build.append(spent / max(built, 1) * 1e6)
        encode.append(first.encode_round() / max(len(first.records), 1) * 1e6)
    sent = hashlib.sha256(b"\n".join(record.encode() for record in first.records)).hexdigest()[:16]
    return {"events": len(items), "records": records, "built": built, "alerts": alerts,
            "digest": sorted(digests)[0] if len(digests) == 1 else sorted(digests), "records_digest": sent,
            "stage2_us": spread(stage2), "stage1_build_us": spread(build), "stage1_encode_us": spread(encode),
            "rounds": args.rounds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=3, help="input partitions per topic")
    parser.add_argument("--batch", type=int, default=500, help="events per stage-1 batch, messages per stage-2 read")
    parser.add_argument("--heavy-share", type=float, default=0.3)
    parser.add_argument("--hosts", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lanes", default="plain,checks")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    tune_thresholds()  # the collector's settings of every pipesentry command
    out: dict[str, Any] = {}
    for lane in args.lanes.split(","):
        out[lane] = run_lane(lane == "checks", args)
        row = out[lane]
        print(f"{lane:7} stage2 {row['stage2_us']} us/record  stage1 build {row['stage1_build_us']} "
              f"encode {row['stage1_encode_us']} us/record  records {row['records']}  alerts {row['alerts']}  "
              f"digest {row['digest']} records {row['records_digest']}", file=sys.stderr)
    text = json.dumps(out, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
