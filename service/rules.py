"""Reading Sigma rule files from disk for the pure engine in ``detectors.sigma``.

The engine never touches the file system; this module is the shell side that
turns paths into :class:`~detectors.sigma.RuleText` values and processing
pipeline files into YAML text. A file that cannot be read or decoded is a
:class:`~detectors.sigma.RuleError` in the result, never an exception, so one
bad file cannot stop a (re)load of thousands of good ones.

Ruleset names: every rule found under a directory given on the command line
belongs to the ruleset named after that directory (``.../sigmahq`` ->
``sigmahq``); a file given directly belongs to the ruleset named after its
parent directory.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from detectors.sigma import LoadResult, RuleError, RuleText
from detectors.sigma.memo import CompileMemo
from detectors.sigma.regex import DEFAULT_TIMEOUT_MS

RULE_SUFFIXES: tuple[str, ...] = (".yml", ".yaml")
RULES_DIR_ENV = "PIPESENTRY_RULES_DIR"
"""Environment variable overriding :func:`default_rules_dir`."""

PathLike = str | os.PathLike[str]


def default_rules_dir() -> Path:
    """The project's own rule pack (``sigma-rules/``).

    Resolution order, first hit wins:

    1. ``$PIPESENTRY_RULES_DIR`` (deployments that mount rules elsewhere);
    2. ``<checkout>/sigma-rules`` next to the ``service`` package: the source
       checkout and editable installs, which is how the project is run;
    3. ``<sys.prefix>/share/pipesentry/sigma-rules``: where a packaged install
       puts the pack as data files.

    When none exists the checkout path is returned, so the caller's error
    message names the place the pack is expected.
    """
    override = os.environ.get(RULES_DIR_ENV)
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parent.parent / "sigma-rules"
    if checkout.is_dir():
        return checkout
    installed = Path(sys.prefix) / "share" / "pipesentry" / "sigma-rules"
    if installed.is_dir():
        return installed
    return checkout


def _rule_files(root: Path) -> Iterator[Path]:
    """Rule files below ``root`` in a deterministic (sorted) order; hidden entries are skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(RULE_SUFFIXES) and not name.startswith("."):
                yield Path(dirpath, name)


def _rule_paths(root: Path) -> Iterator[str]:
    """``str()`` of each of :func:`_rule_files`, without a :class:`Path` per file (a cached start
    stats every rule file and makes nothing else of it)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = str(Path(dirpath))  # as Path(dirpath, name) spells the directory
        prefix = "" if base == "." else base if base.endswith("/") else base + "/"
        for name in sorted(filenames):
            if name.endswith(RULE_SUFFIXES) and not name.startswith("."):
                yield prefix + name


def _read_text(path: Path) -> str:
    """UTF-8 text of ``path``; a BOM is dropped. Raises ``OSError``/``UnicodeDecodeError``."""
    return path.read_bytes().decode("utf-8-sig")


def _read_error(source: Path, reason: str) -> RuleError:
    return RuleError(source=str(source), rule_id=None, title=None, reason=reason)


def _read_all(paths: Sequence[PathLike],
              on_progress: Callable[[str, int], None] | None = None) -> tuple[list[RuleText], list[RuleError]]:
    texts: list[RuleText] = []
    errors: list[RuleError] = []
    seen: set[object] = set()
    for given in paths:
        root = Path(given)
        if root.is_dir():
            ruleset = root.resolve().name
            files: Iterator[Path] | list[Path] = _rule_files(root)
        elif root.exists():
            ruleset = root.resolve().parent.name
            files = [root]
        else:
            errors.append(_read_error(root, "no such file or directory"))
            continue
        for path in files:
            try:
                info = os.stat(path)
                key: object = (info.st_dev, info.st_ino)  # one call, where resolve() is one per path part
            except OSError:
                key = path  # the read below reports why
            if key in seen:  # the same file reached twice (overlapping arguments, links)
                continue
            seen.add(key)
            try:
                text = _read_text(path)
            except UnicodeDecodeError as exc:
                errors.append(_read_error(path, f"not UTF-8 text: {exc.reason} at byte {exc.start}"))
                continue
            except OSError as exc:
                errors.append(_read_error(path, f"cannot read: {exc.strerror or exc}"))
                continue
            texts.append(RuleText(source=str(path), text=text, ruleset=ruleset))
            if on_progress is not None:
                on_progress("read", len(texts))
    return texts, errors


def read_rule_texts(paths: Sequence[PathLike]) -> list[RuleText]:
    """Every rule file under ``paths`` as :class:`RuleText`, in a stable order.

    Files that cannot be read are left out; use :func:`load_rules` to learn why.
    """
    return _read_all(paths)[0]


def read_pipelines(pipelines: Sequence[PathLike]) -> tuple[list[str], list[RuleError]]:
    """YAML text of each processing pipeline file, plus one error per unreadable file.

    Only pipeline *files* are accepted: the engine takes pipeline YAML, and
    pySigma's named Python pipelines have no YAML form.
    """
    texts: list[str] = []
    errors: list[RuleError] = []
    for given in pipelines:
        path = Path(given)
        try:
            texts.append(_read_text(path))
        except UnicodeDecodeError as exc:
            errors.append(_read_error(path, f"pipeline is not UTF-8 text: {exc.reason}"))
        except OSError as exc:
            errors.append(_read_error(path, f"cannot read pipeline: {exc.strerror or exc}"))
    return texts, errors


def load_rules(
    paths: Sequence[PathLike],
    pipelines: Sequence[PathLike] = (),
    *,
    skip_invalid: bool = True,
    regex_timeout_ms: float = DEFAULT_TIMEOUT_MS,
    on_progress: Callable[[str, int], None] | None = None,
    cache_dir: PathLike | None = None,
    cased_fields: bool = False,
    memo: CompileMemo | None = None,
) -> LoadResult:
    """Read and compile every rule under ``paths`` (files or directory trees).

    ``pipelines`` are processing pipeline YAML files, applied in the given
    order. Read errors (missing paths, unreadable or non-UTF-8 files, bad
    pipeline files) come first in ``result.errors``, followed by the engine's
    parse and compile errors. With ``skip_invalid=False`` the engine's own
    behaviour for invalid rules applies. ``on_progress`` hears ``("read", files so far)``, then
    the compiler's ``parsed`` and ``compiled`` counts (not when the ruleset comes from the cache).

    ``cache_dir``: keep the compiled ruleset there and use it while the rule texts,
    pipelines, engine and options are unchanged (see :mod:`service.rules_cache`).
    ``cased_fields`` (``rules.field_names: sensitive``): see :func:`detectors.sigma.compile_ruleset`.

    ``memo``: what the previous compile with it made of each text (a hot reload keeps one): a
    compile then parses and compiles only the texts that changed since, with the same result
    (see :mod:`detectors.sigma.incremental`). A ruleset read from the cache leaves it as it was.
    """
    restored = [False]
    with _collector_paused(restored):
        result = _load(paths, pipelines, skip_invalid, regex_timeout_ms, cache_dir, on_progress, cased_fields,
                       memo)
        restored[0] = result.restored
    return result


@contextmanager
def _collector_paused(frozen: list[bool]) -> Iterator[None]:
    """No garbage collection while a ruleset is built: it allocates millions of objects that all
    live on, so every collection walks a growing heap to free next to nothing (it was half of a
    cold start). The caller's setting is restored after, and collects what garbage there was.

    At the end the compile's garbage is collected (one full collection; a ruleset restored from
    the cache, ``frozen[0]`` set, made next to none and skips it) and what is alive moves to the
    permanent generation before the collector is enabled again: otherwise the first allocation
    after it runs a collection over every object the load made (about 0.15 s for the SigmaHQ
    corpus), and the caller's :func:`service.gctune.tune_gc` another. A caller that replaces a
    ruleset unfreezes (``tune_gc()``) to let the old one go."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if not frozen[0]:
            gc.collect()
        gc.freeze()
        if enabled:
            gc.enable()


def stat_signature(paths: Sequence[PathLike], pipelines: Sequence[PathLike]) -> tuple[str, float]:
    """A hash of what :func:`_read_all` would read, from the file system's metadata alone (every
    rule file and pipeline in reading order, with its device, inode, size, modification and change
    times), and the newest of those times. The compiled-ruleset cache maps it to the key of the
    texts (see :mod:`service.rules_cache`, "manifests"), so an unchanged set is found without
    reading thousands of files."""
    import hashlib

    digest = hashlib.sha256()
    newest = 0.0
    for group, given_paths in (("rules", paths), ("pipelines", pipelines)):
        digest.update(f"{group}\0{len(given_paths)}\0".encode())
        for given in given_paths:
            root = Path(given)
            digest.update(os.fsencode(root) + b"\0")
            files: Iterator[str] | list[Path] = _rule_paths(root) if group == "rules" and root.is_dir() else [root]
            for path in files:
                try:
                    info = os.stat(path)
                except OSError:
                    digest.update(b"?" + os.fsencode(path) + b"\0")
                    newest = float("inf")  # unreadable: never trusted from metadata
                    continue
                digest.update(f"{path}\0{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:"
                              f"{info.st_ctime_ns}:{info.st_mode}\0".encode("utf-8", "surrogateescape"))
                newest = max(newest, info.st_mtime, info.st_ctime)
    return digest.hexdigest(), newest


def _load(paths: Sequence[PathLike], pipelines: Sequence[PathLike], skip_invalid: bool, regex_timeout_ms: float,
          cache_dir: PathLike | None, on_progress: Callable[[str, int], None] | None,
          cased_fields: bool = False,
          memo: CompileMemo | None = None) -> LoadResult:
    signature = ""
    settled = False
    if cache_dir is not None:
        from service import rules_cache

        started = time.time()
        signature, newest = stat_signature(paths, pipelines)
        signature = rules_cache.manifest_name(signature, regex_timeout_ms, cased_fields=cased_fields)
        settled = newest < started - rules_cache.SETTLE_S
        known = rules_cache.load_manifest(Path(cache_dir), signature) if settled else None
        if known is not None:
            found = rules_cache.load(Path(cache_dir), known, regex_timeout_ms)
            if found is not None and found.ruleset.cased_fields == cased_fields:
                if memo is not None:
                    rules_cache.seed_memo(Path(cache_dir), known, memo)
                return found  # the texts are those the key was made of: no need to read them
    texts, read_errors = _read_all(paths, on_progress)
    pipeline_texts, pipeline_errors = read_pipelines(pipelines)
    result: LoadResult | None = None
    key = ""
    if cache_dir is not None:
        key = rules_cache.cache_key(texts, pipeline_texts, regex_timeout_ms, cased_fields=cased_fields)
        result = rules_cache.load(Path(cache_dir), key, regex_timeout_ms)
        if result is not None and result.ruleset.cased_fields != cased_fields:
            result = None
        if result is not None and memo is not None:
            rules_cache.seed_memo(Path(cache_dir), key, memo)
        if result is not None and settled and not read_errors and not pipeline_errors:
            rules_cache.store_manifest(Path(cache_dir), signature, key)
    if result is None:
        from detectors.sigma.compiler import compile_ruleset  # pySigma's parser: only to compile

        if cache_dir is not None and memo is None:
            memo = CompileMemo()  # kept beside the entry: a start restored from it reloads incrementally
        result = compile_ruleset(texts, pipelines=pipeline_texts, skip_invalid=skip_invalid,
                                 regex_timeout_ms=regex_timeout_ms, on_progress=on_progress,
                                 cased_fields=cased_fields, memo=memo)
        if cache_dir is not None and rules_cache.store(Path(cache_dir), key, result, memo) and settled \
                and not read_errors and not pipeline_errors:
            rules_cache.store_manifest(Path(cache_dir), signature, key)
    extra = read_errors + pipeline_errors
    if not extra:
        return result
    return _with_errors(result, extra)


def _with_errors(result: LoadResult, extra: list[RuleError]) -> LoadResult:
    """``result`` with ``extra`` errors in front, whether or not LoadResult is frozen."""
    merged = [*extra, *result.errors]
    if dataclasses.is_dataclass(result):
        return dataclasses.replace(result, errors=merged)
    result.errors = merged
    return result


def read_rules(paths: Sequence[PathLike]) -> tuple[list[RuleText], list[RuleError]]:
    """Every rule file under ``paths`` as :class:`RuleText` and one error per file that cannot be read."""
    return _read_all(paths)
