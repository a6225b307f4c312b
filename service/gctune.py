"""The garbage collector's settings for pipesentry's processes (no imports beyond ``gc``: the CLI sets
them before it imports a command).

pipesentry allocates millions of small objects that live on (a compiled ruleset) and a stream
of short-lived ones (events, matches): the default thresholds (a gen-0 collection every 700
allocations) make the collector walk the growing heap over and over. :func:`tune_thresholds`
is the CLI's setting for every command; :func:`tune_gc` also moves what is alive into the
permanent generation once the ruleset is built.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 100)
"""Gen-0 every 50,000 net allocations (not 700); older generations as often as relative to it."""


def tune_thresholds() -> None:
    """Set :data:`GC_THRESHOLDS` (the CLI does, before running any command)."""
    gc.set_threshold(*GC_THRESHOLDS)


def tune_gc(*, collect: bool = True) -> None:
    """Fewer, cheaper garbage collections for an allocation-heavy loop over a large, long-lived ruleset.

    Objects alive now (compiled rules, indexes) move to the permanent generation
    so full collections stop walking them; gen-0 runs every 50,000 allocations
    instead of 700. Called by every command that runs the pipeline or loads rules, after the
    initial compile, and after each swap.

    ``collect``: collect garbage first (the compile's, or a replaced ruleset's: the frozen
    objects are unfrozen for it). A start whose ruleset came from the compiled-ruleset cache made
    next to no garbage and passes False: a full collection walks every object of the ruleset
    (about 0.2 s for the SigmaHQ corpus).
    """
    if collect:
        gc.unfreeze()  # let garbage of a replaced ruleset be collected
        gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
