"""pipesentry beside rsigma (timescale/rsigma, a Rust Sigma engine) on the same rules and events.

Both engines run as whole processes (``pipesentry eval`` and ``rsigma engine eval``), single
threaded (``RAYON_NUM_THREADS=1``), one after the other and alternating, ``--runs`` times each,
over the same NDJSON files and the same rules (``--rules``: the SigmaHQ corpus by default).
Per engine and workload:

- ``cpu_s``: user + system CPU time of the whole process (``os.wait4``), median of the runs;
- ``events_per_s_core``: steady state per core, ``(N - 1) / (cpu(N events) - cpu(1 event))``:
  the 1-event run's CPU (start, rule loading, exit) is subtracted;
- ``cold_start_cpu_s`` / ``cold_start_wall_s``: the 1-event run; for pipesentry also with the
  compiled-ruleset cache warm (``cached_cold_start_*``: ``eval --rules-cache``);
- ``rss_mb``: the N-event run's peak RSS;
- the match diff: the ``(line, rule id)`` pairs each engine reported (rsigma prints no line
  number, so a separate, untimed ``--include-event`` run maps its matches back to lines by
  content), with the pairs only one engine found grouped by rule and log source.

Workloads (``--events`` per file, seeded):

- ``mix``: ``bench/eventgen.py``'s mixed corpus, no log-source hint (every rule on every event);
- ``mix_routed``: the same events with their log source in a ``logsource`` object, read by
  pipesentry's ``--logsource-field logsource`` and by rsigma's ``--logsource-routing`` (its field
  map pointed at ``logsource.product`` ...); rsigma prunes rules whose log source conflicts with the
  event's, pipesentry evaluates the rules whose log source covers it;
- ``structured_windows``: Sysmon process creation events with SigmaHQ field names (``Image``,
  ``CommandLine``, ...), 2% attacker command lines;
- ``raw_windows``: the same activity as unparsed Windows Security 4688 text forwarded over
  syslog, in one ``message`` field (only keyword rules can match), 10% attacker command lines;
- ``no_match``: objects of random hex tokens under field names no rule uses.

The last three follow the description of rsigma's own performance lanes; this generator is our own.

rsigma 0.23.0 (0.26 needs a newer rustc) is found in ``.bench-tools/rsigma`` or on ``PATH``, or
built there with ``cargo install rsigma --version 0.23.0 --locked`` (``--build``; about ten minutes
on two cores). Without it the script says so and exits 0 after measuring pipesentry alone.

    python bench/peers.py [--json OUT.json] [--markdown OUT.md] [--events 20000] [--runs 3]
                          [--workloads mix,mix_routed,...] [--build]
    python bench/peers.py --cold-only [--runs 8] [--also BASE_TREE ...]   # the cold start lane alone
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench.eventgen import BENIGN_WIN, HOSTS, SUSPICIOUS_WIN, USERS, Vocab, iter_events  # noqa: E402

RSIGMA_VERSION = "0.23.0"
TOOLS = ROOT / ".bench-tools"
RSIGMA_ROOT = TOOLS / "rsigma"
SIGMAHQ_RULES = ROOT.parent / "shared" / "sigmahq" / "rules"
WORKLOADS = ("mix", "mix_routed", "structured_windows", "raw_windows", "no_match")
ROUTED = {"mix_routed"}
LOGSOURCE_FIELD = "logsource"
RSIGMA_FIELD_MAP = "product=logsource.product,service=logsource.service,category=logsource.category"


# -- workloads ----------------------------------------------------------------------------------

Event = dict[str, Any]


def _win_process(v: Vocab, bad: bool) -> tuple[str, str, str, str]:
    image, cmd, parent = v.rng.choice(SUSPICIOUS_WIN if bad else BENIGN_WIN)
    return v.fill(image), v.fill(cmd), v.fill(parent), v.rng.choice(USERS)


def structured_windows(v: Vocab, bad: bool) -> Event:
    """A Sysmon EventID 1 as a JSON object with the SigmaHQ field names."""
    r = v.rng
    image, cmd, parent, user = _win_process(v, bad)
    return {
        "EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": f"{r.choice(HOSTS)}.corp.example",
        "UtcTime": f"2026-11-{r.randint(1, 28):02d} {r.randrange(24):02d}:{r.randrange(60):02d}:{r.randrange(60):02d}.000",
        "ProcessGuid": v.guid(), "ProcessId": r.randrange(100, 30000), "Image": image, "CommandLine": cmd,
        "OriginalFileName": image.rsplit("\\", 1)[-1], "CurrentDirectory": f"C:\\Users\\{user}\\",
        "User": f"CORP\\{user}", "LogonId": "0x" + v.hex(6), "IntegrityLevel": r.choice(("Medium", "High", "System")),
        "Hashes": f"SHA256={v.hex(64).upper()},IMPHASH={v.hex(32).upper()}", "ParentProcessGuid": v.guid(),
        "ParentProcessId": r.randrange(100, 30000), "ParentImage": parent, "ParentCommandLine": parent,
        "product": "windows", "category": "process_creation",
    }


def raw_windows(v: Vocab, bad: bool) -> Event:
    """A Windows Security 4688 (process created) as a syslog forwarder sends it unparsed: one text field."""
    r = v.rng
    image, cmd, parent, user = _win_process(v, bad)
    host = r.choice(HOSTS)
    text = (f"<14>Nov {r.randint(1, 28)} {r.randrange(24):02d}:{r.randrange(60):02d}:{r.randrange(60):02d} {host} "
            f"Microsoft-Windows-Security-Auditing[4688]: A new process has been created. Creator Subject: "
            f"Security ID: S-1-5-21-{r.randrange(10**9)} Account Name: {user} Account Domain: CORP "
            f"Logon ID: 0x{v.hex(5)} Process Information: New Process ID: 0x{v.hex(4)} New Process Name: {image} "
            f"Token Elevation Type: %%1938 Creator Process ID: 0x{v.hex(4)} Creator Process Name: {parent} "
            f"Process Command Line: {cmd}")
    return {"message": text, "host": host, "product": "windows"}


def no_match(v: Vocab, bad: bool) -> Event:
    """Random tokens under field names no rule reads: every rule should stay silent."""
    del bad
    return {f"attr_{index}": v.hex(20) for index in range(8)} | {"product": "synthetic"}


LANES: dict[str, tuple[Callable[[Vocab, bool], Event], float]] = {
    "structured_windows": (structured_windows, 0.02),
    "raw_windows": (raw_windows, 0.10),
    "no_match": (no_match, 0.0),
}


def workload_events(name: str, count: int, seed: int) -> Iterator[Event]:
    if name in ("mix", "mix_routed"):
        for logsource, event in iter_events(count, seed):
            yield {**event, LOGSOURCE_FIELD: logsource.as_dict()} if name in ROUTED else event
        return
    make, share = LANES[name]
    rng = random.Random(f"{name}:{seed}")
    vocab = Vocab(rng)
    for _ in range(count):
        yield make(vocab, rng.random() < share)


def write_workload(path: Path, name: str, count: int, seed: int) -> int:
    lines = 0
    with path.open("wb") as out:
        for event in workload_events(name, count, seed):
            out.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
            lines += 1
    return lines


# -- running ----------------------------------------------------------------------------------


@dataclass
class Run:
    cpu_s: float
    wall_s: float
    rss_mb: float
    returncode: int
    stdout: Path


def run_process(argv: list[str], stdin: Path, stdout: Path, env: dict[str, str], cwd: Path | None = None) -> Run:
    """Run ``argv`` with ``stdin`` from a file and stdout into one; the child's own rusage."""
    with stdin.open("rb") as inp, stdout.open("wb") as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=inp, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read()[-2000:].decode("utf-8", "replace")
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {tail}")
    return Run(usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024.0, proc.returncode, stdout)


@dataclass
class Engine:
    name: str
    argv: Callable[[str, bool], list[str]]
    """(workload, cached) -> argv; events come on stdin."""
    env: dict[str, str]
    cached: bool = False
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    cwd: Path | None = None
    """Where the process runs (``python -m`` imports from there first: a tree's own root)."""


def pipesentry_engine(rules: Path, cache: Path, root: Path = ROOT, name: str = "pipesentry") -> Engine:
    # the tree's code, from its compiled bytecode as an installed pipesentry starts (not compiled again per run)
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "PYTHONPATH": str(root)}

    def argv(workload: str, cached: bool) -> list[str]:
        out = [sys.executable, "-m", "service.cli", "eval", "--rules", str(rules)]
        if workload in ROUTED:
            out += ["--logsource-field", LOGSOURCE_FIELD]
        if cached:
            out += ["--rules-cache", str(cache)]
        return [*out, "-"]
    return Engine(name, argv, env, cached=True, cwd=root)


def rsigma_engine(binary: Path, rules: Path) -> Engine:
    env = {**os.environ, "RAYON_NUM_THREADS": "1"}

    def argv(workload: str, cached: bool) -> list[str]:
        del cached
        out = [str(binary), "engine", "eval", "-r", str(rules), "--quiet", "--output-format", "ndjson"]
        if workload in ROUTED:
            out += ["--logsource-routing", "--logsource-field-map", RSIGMA_FIELD_MAP]
        return out
    return Engine("rsigma", argv, env)


def find_rsigma(build: bool) -> tuple[Path | None, str]:
    """The rsigma binary and how it was found, or None and why not."""
    candidates = [RSIGMA_ROOT / "bin" / "rsigma"]
    on_path = shutil.which("rsigma")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            version = _version(candidate)
            if version == RSIGMA_VERSION:
                return candidate, f"rsigma {version} at {candidate}"
    if not build:
        return None, (f"rsigma {RSIGMA_VERSION} not found in {RSIGMA_ROOT}/bin or on PATH; build it with --build "
                      f"(cargo install rsigma --version {RSIGMA_VERSION} --locked --root {RSIGMA_ROOT})")
    cargo = shutil.which("cargo")
    if cargo is None:
        return None, "rsigma cannot be built: cargo is not installed"
    print(f"building rsigma {RSIGMA_VERSION} into {RSIGMA_ROOT} (about ten minutes on two cores)", file=sys.stderr)
    done = subprocess.run([cargo, "install", "rsigma", "--version", RSIGMA_VERSION, "--locked", "--root",
                           str(RSIGMA_ROOT)], check=False, stdout=sys.stderr)
    binary = RSIGMA_ROOT / "bin" / "rsigma"
    if done.returncode != 0 or not binary.is_file():
        return None, f"rsigma cannot be built (cargo install exited {done.returncode}); see the output above"
    return binary, f"rsigma {_version(binary)} built at {binary}"


def _version(binary: Path) -> str | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.stdout.splitlines()[0].split() if out.stdout.strip() else []  # "rsigma 0.23.0" (then features)
    return words[-1] if words else None


# -- matches ----------------------------------------------------------------------------------


def canonical(event: Any) -> bytes:
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def pipesentry_matches(path: Path) -> set[tuple[int, str]]:
    out: set[tuple[int, str]] = set()
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                record = orjson.loads(line)
                out.add((int(record["line"]), str(record["rule_id"])))
    return out


def rsigma_matches(path: Path, events: Path) -> set[tuple[int, str]]:
    """rsigma's (line, rule id) pairs from an ``--include-event`` run: events are found by content."""
    lines: dict[bytes, list[int]] = {}
    with events.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                lines.setdefault(canonical(orjson.loads(line)), []).append(number)
    out: set[tuple[int, str]] = set()
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            record = orjson.loads(raw)
            rule = str(record.get("rule_id") or record.get("rule_title"))
            event = record.get("event")
            for number in lines.get(canonical(event), ()):  # identical events: each line matches alike
                out.add((number, rule))
    return out


def summarise_diff(ours: set[tuple[int, str]], theirs: set[tuple[int, str]], events: Path,
                   titles: dict[str, str]) -> dict[str, Any]:
    only_ours, only_theirs = ours - theirs, theirs - ours
    sources: dict[int, str] = {}
    wanted = {line for line, _ in only_ours | only_theirs}
    if wanted:
        with events.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if number in wanted:
                    event = orjson.loads(line)
                    ls = event.get(LOGSOURCE_FIELD) if isinstance(event, dict) else None
                    sources[number] = ("/".join(str(ls.get(k) or "*") for k in ("product", "category", "service"))
                                       if isinstance(ls, dict) else "-")

    def group(pairs: set[tuple[int, str]]) -> list[dict[str, Any]]:
        by_rule: dict[str, list[int]] = {}
        for line, rule in pairs:
            by_rule.setdefault(rule, []).append(line)
        rows = []
        for rule, lines in sorted(by_rule.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            rows.append({"rule_id": rule, "title": titles.get(rule, ""), "events": len(lines),
                         "example_lines": sorted(lines)[:3],
                         "log_sources": dict(Counter(sources.get(line, "-") for line in lines).most_common(3))})
        return rows
    return {"pipesentry": len(ours), "rsigma": len(theirs), "common": len(ours & theirs),
            "only_pipesentry": group(only_ours), "only_rsigma": group(only_theirs)}


def rule_titles(rules: Path) -> dict[str, str]:
    from service.rules import load_rules

    return {info.id: info.title for info in load_rules([rules]).ruleset.rules}


# -- the session ------------------------------------------------------------------------------


def measure(engines: list[Engine], workloads: list[str], files: dict[str, Path], one: dict[str, Path],
            runs: int, work: Path) -> None:
    """Alternate engines run by run: cold start (1 event, once per round), the 1-event run of each
    workload (with the ruleset cache warm, for pipesentry), N events."""
    for engine in engines:
        if engine.cached:  # fill the ruleset cache once: every later cached run starts from it
            run_process(engine.argv(workloads[0], True), one[workloads[0]], work / "cold.out", engine.env)
    for round_number in range(runs):
        order = engines if round_number % 2 == 0 else list(reversed(engines))
        colds = {engine.name: run_process(engine.argv(workloads[0], False), one[workloads[0]], work / "cold.out",
                                          engine.env) for engine in order}
        for workload in workloads:
            order = engines if (round_number + len(workload)) % 2 == 0 else list(reversed(engines))
            for engine in order:
                sink = work / f"{engine.name}-{workload}.out"
                cold = colds[engine.name]
                figures = {"cold_cpu_s": cold.cpu_s, "cold_wall_s": cold.wall_s, "load_1m": os.getloadavg()[0]}
                if engine.cached:
                    warm = run_process(engine.argv(workload, True), one[workload], work / "cold.out", engine.env)
                    figures |= {"cached_cold_cpu_s": warm.cpu_s, "cached_cold_wall_s": warm.wall_s}
                else:
                    base = run_process(engine.argv(workload, False), one[workload], work / "cold.out", engine.env)
                    figures |= {"base_cpu_s": base.cpu_s}
                full = run_process(engine.argv(workload, engine.cached), files[workload], sink, engine.env)
                figures |= {"cpu_s": full.cpu_s, "wall_s": full.wall_s, "rss_mb": full.rss_mb}
                figures.setdefault("base_cpu_s", figures.get("cached_cold_cpu_s", cold.cpu_s))
                engine.runs.setdefault(workload, []).append(figures)
                print(f"round {round_number + 1} {workload} {engine.name}: "
                      + ", ".join(f"{k}={v:.2f}" for k, v in figures.items()), file=sys.stderr)


def measure_cold(engines: list[Engine], one: Path, runs: int, work: Path) -> dict[str, Any]:
    """``--cold-only``: the 1-event run of each engine, alternating, ``runs`` times (pipesentry with its
    ruleset cache warm: filled by a first, untimed run)."""
    for engine in engines:
        if engine.cached:
            run_process(engine.argv("mix", True), one, work / "cold.out", engine.env, engine.cwd)
    figures: dict[str, list[Run]] = {engine.name: [] for engine in engines}
    loads = []
    for round_number in range(runs):
        order = engines if round_number % 2 == 0 else list(reversed(engines))
        for engine in order:
            figures[engine.name].append(run_process(engine.argv("mix", engine.cached), one, work / "cold.out",
                                                    engine.env, engine.cwd))
        loads.append(round(os.getloadavg()[0], 2))
    out: dict[str, Any] = {"runs": runs, "load_1m": loads, "engines": {}}
    for engine in engines:
        cpu, wall = [r.cpu_s for r in figures[engine.name]], [r.wall_s for r in figures[engine.name]]
        out["engines"][engine.name] = {
            "cached": engine.cached, "cpu_s": round(_median(cpu), 3), "cpu_s_min": round(min(cpu), 3),
            "cpu_s_max": round(max(cpu), 3), "wall_s": round(_median(wall), 3), "wall_s_min": round(min(wall), 3),
            "wall_s_max": round(max(wall), 3), "cpu_s_runs": [round(c, 3) for c in cpu]}
    return out


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def figures_of(engine: Engine, workload: str, events: int) -> dict[str, Any]:
    runs = engine.runs.get(workload, [])
    rates = [(events - 1) / (r["cpu_s"] - r["base_cpu_s"]) for r in runs if r["cpu_s"] > r["base_cpu_s"]]
    out: dict[str, Any] = {
        "runs": len(runs),
        "cpu_s": round(_median([r["cpu_s"] for r in runs]), 3),
        "events_per_s_core": round(_median(rates)) if rates else None,
        "events_per_s_core_min": round(min(rates)) if rates else None,
        "events_per_s_core_max": round(max(rates)) if rates else None,
        "cold_start_cpu_s": round(_median([r["cold_cpu_s"] for r in runs]), 3),
        "cold_start_wall_s": round(_median([r["cold_wall_s"] for r in runs]), 3),
        "rss_mb": round(_median([r["rss_mb"] for r in runs]), 1),
        "load_1m": [round(r["load_1m"], 2) for r in runs],
    }
    if runs and "cached_cold_cpu_s" in runs[0]:
        out["cached_cold_start_cpu_s"] = round(_median([r["cached_cold_cpu_s"] for r in runs]), 3)
        out["cached_cold_start_wall_s"] = round(_median([r["cached_cold_wall_s"] for r in runs]), 3)
    return out


def markdown(result: dict[str, Any]) -> str:
    rows = ["| workload | pipesentry ev/s/core (min-max) | rsigma ev/s/core (min-max) | ratio | pipesentry cold start CPU s "
            "(cached) | rsigma cold start CPU s | RSS MB (ps / rs) | matches (ps / rs / common) | load 1m |",
            "|---|---|---|---|---|---|---|---|---|"]
    for workload, entry in result["workloads"].items():
        ps, rs = entry.get("pipesentry", {}), entry.get("rsigma", {})

        def rate(f: dict[str, Any]) -> str:
            if not f or f.get("events_per_s_core") is None:
                return "-"
            return f"{f['events_per_s_core']:,} ({f['events_per_s_core_min']:,}-{f['events_per_s_core_max']:,})"
        ratio = (f"{ps['events_per_s_core'] / rs['events_per_s_core']:.2f}"
                 if ps.get("events_per_s_core") and rs.get("events_per_s_core") else "-")
        diff = entry.get("diff") or {}
        matches = f"{diff.get('pipesentry', '-')} / {diff.get('rsigma', '-')} / {diff.get('common', '-')}"
        loads = sorted(set(ps.get("load_1m", []) + rs.get("load_1m", [])))
        rows.append(f"| {workload} | {rate(ps)} | {rate(rs)} | {ratio} | {ps.get('cold_start_cpu_s', '-')} "
                    f"({ps.get('cached_cold_start_cpu_s', '-')}) | {rs.get('cold_start_cpu_s', '-')} | "
                    f"{ps.get('rss_mb', '-')} / {rs.get('rss_mb', '-')} | {matches} | "
                    f"{loads[0] if loads else '-'}-{loads[-1] if loads else '-'} |")
    lines = [f"pipesentry {result['commit']} vs {result['rsigma']}; {result['rules']} rules; {result['events']} events "
             f"per workload; {result['runs']} alternating runs; CPU time per core (whole process)", "", *rows, ""]
    for workload, entry in result["workloads"].items():
        diff = entry.get("diff")
        if not diff:
            continue
        for side in ("only_pipesentry", "only_rsigma"):
            for row in diff[side][:10]:
                lines.append(f"- {workload}: {side.replace('_', ' ')}: {row['rule_id']} {row['title']!r} on "
                             f"{row['events']} events (lines {row['example_lines']}, {row['log_sources']})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pipesentry beside rsigma (see the module docstring).")
    parser.add_argument("--rules", type=Path, default=SIGMAHQ_RULES)
    parser.add_argument("--events", type=int, default=20_000, help="events per workload")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--build", action="store_true", help="build rsigma when it is not found")
    parser.add_argument("--work", type=Path, default=TOOLS / "peers", help="where event files and outputs go")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    parser.add_argument("--markdown", type=Path, default=None, metavar="FILE")
    parser.add_argument("--cold-only", action="store_true",
                        help="only the cold start lane: a 1-event eval (pipesentry with its ruleset cache warm)"
                             " beside rsigma's, alternating --runs times; prints JSON")
    parser.add_argument("--also", type=Path, action="append", default=[], metavar="TREE",
                        help="with --cold-only: another pipesentry tree (a base commit's checkout, its native"
                             " screen built) measured in the same rounds, named pipesentry@TREE")
    args = parser.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)} (known: {', '.join(WORKLOADS)})")
    if not args.rules.is_dir():
        parser.error(f"rules directory {args.rules} not found")
    args.work.mkdir(parents=True, exist_ok=True)
    binary, how = find_rsigma(args.build)
    print(how, file=sys.stderr)
    if args.cold_only:
        one_event = args.work / "cold-1.ndjson"
        write_workload(one_event, "mix", 1, args.seed)
        trees = [(ROOT, "pipesentry"), *((tree.resolve(), f"pipesentry@{tree}") for tree in args.also)]
        engines = [pipesentry_engine(args.rules, args.work / f"rules-cache-{number}", root, name)
                   for number, (root, name) in enumerate(trees)]
        if binary is not None:
            engines.append(rsigma_engine(binary, args.rules))
        cold = measure_cold(engines, one_event, args.runs, args.work)
        cold |= {"commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                          text=True, check=False).stdout.strip(), "rsigma": how, "nproc": os.cpu_count()}
        report = orjson.dumps(cold, option=orjson.OPT_INDENT_2)
        if args.json:
            args.json.write_bytes(report)
        print(report.decode())
        return 0
    files: dict[str, Path] = {}
    one: dict[str, Path] = {}
    for workload in workloads:
        files[workload] = args.work / f"{workload}-{args.events}-{args.seed}.ndjson"
        write_workload(files[workload], workload, args.events, args.seed)
        one[workload] = args.work / f"{workload}-1.ndjson"
        one[workload].write_bytes(files[workload].read_bytes().split(b"\n", 1)[0] + b"\n")
    cache = args.work / "rules-cache"
    engines = [pipesentry_engine(args.rules, cache)]
    if binary is not None:
        engines.append(rsigma_engine(binary, args.rules))
    measure(engines, workloads, files, one, args.runs, args.work)
    titles = rule_titles(args.rules)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    result: dict[str, Any] = {"commit": commit, "rsigma": how, "rules": len(titles), "events": args.events,
                              "runs": args.runs, "seed": args.seed, "workloads": {}}
    for workload in workloads:
        entry: dict[str, Any] = {engine.name: figures_of(engine, workload, args.events) for engine in engines}
        if binary is not None:
            diff_out = args.work / f"rsigma-{workload}-events.out"
            rs = engines[1]
            run_process([*rs.argv(workload, False), "--include-event"], files[workload], diff_out, rs.env)
            entry["diff"] = summarise_diff(pipesentry_matches(args.work / f"pipesentry-{workload}.out"),
                                           rsigma_matches(diff_out, files[workload]), files[workload], titles)
        result["workloads"][workload] = entry
    text = markdown(result)
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    print(text)
    if binary is None:
        print(f"rsigma skipped: {how}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
