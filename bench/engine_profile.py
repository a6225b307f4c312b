"""Quick profile of the Sigma engine on the SigmaHQ corpus (the official figures come from bench/engine.py).

Synthesises a mixed event stream: events built from rules' own literals (many
near-misses, some matches) plus generic noise, each with its rule's log source.
Prints compile time, events/s for ``evaluate`` and ``evaluate_naive``, and RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path
from typing import Any

from detectors.model import LogSource
from detectors.sigma import RuleText, compile_ruleset
from detectors.sigma.atoms import TextAtom
from detectors.sigma.screen_abi import CheckKind

SIGMAHQ = Path(__file__).resolve().parent.parent.parent / "shared" / "sigmahq"
NOISE_FIELDS = ("Image", "CommandLine", "ParentImage", "User", "TargetFilename", "EventID", "Hashes",
                "DestinationHostname", "QueryName", "ScriptBlockText", "cs-uri-query", "c-useragent")


def _value_for(atom: TextAtom, rng: random.Random) -> str:
    pad = "".join(rng.choice("abcdefgh \\/.-") for _ in range(rng.randint(0, 30)))
    lit = atom.literal
    if atom.kind is CheckKind.PREFIX:
        return lit + pad
    if atom.kind is CheckKind.SUFFIX:
        return pad + lit
    if atom.kind in (CheckKind.CONTAINS, CheckKind.GLOB):
        return pad + lit + pad
    return lit


def events(ruleset: Any, count: int, seed: int = 7) -> list[tuple[dict[str, Any], LogSource]]:
    rng = random.Random(seed)
    compiled = list(ruleset._compiled)
    atoms = ruleset._atoms
    out: list[tuple[dict[str, Any], LogSource]] = []
    for n in range(count):
        rule = rng.choice(compiled)
        event: dict[str, Any] = {}
        if n % 2 == 0:
            for aid in rule.positives:
                atom = atoms[aid]
                if isinstance(atom, TextAtom) and atom.field and rng.random() < 0.7:
                    event[atom.display] = _value_for(atom, rng)
        for name in rng.sample(NOISE_FIELDS, 6):
            event.setdefault(name, "".join(rng.choice("abcdefghijklmnop \\/.-") for _ in range(rng.randint(4, 80))))
        event["EventID"] = rng.choice([1, 4688, 3, 11, 4624])
        out.append((event, rule.info.logsource))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--naive", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    files = sorted(SIGMAHQ.rglob("*.yml"))
    texts = [RuleText(str(p.relative_to(SIGMAHQ)), p.read_text(), "sigmahq") for p in files]
    start = time.process_time()
    result = compile_ruleset(texts)
    compile_s = time.process_time() - start
    ruleset = result.ruleset
    stream = events(ruleset, args.events)
    start = time.process_time()
    matches = sum(len(ruleset.evaluate(e, ls)) for e, ls in stream)
    indexed_s = time.process_time() - start
    start = time.process_time()
    for e, ls in stream[: args.naive]:
        ruleset.evaluate_naive(e, ls)
    naive_s = time.process_time() - start
    report = {
        "rules": len(ruleset.rules), "errors": len(result.errors), "compile_s": round(compile_s, 2),
        "events": len(stream), "matches": matches,
        "events_per_s": round(len(stream) / indexed_s),
        "naive_events_per_s": round(args.naive / naive_s),
        "speedup": round((len(stream) / indexed_s) / (args.naive / naive_s), 1),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
