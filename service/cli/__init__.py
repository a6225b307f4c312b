"""``pipesentry`` command line: a thin dispatcher over one module per sub-command.

Each sub-command module exposes ``register(subparsers)``, which adds its parser
and sets ``func`` to a callable taking the parsed namespace and returning an
exit code. Modules are imported lazily so ``pipesentry --help`` stays fast and a
broken optional part cannot take the whole CLI down.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Sequence

from service.cli.output import EXIT_CODES_EPILOG, INTERRUPTED, USAGE

COMMAND_MODULES: tuple[str, ...] = (
    "service.cli.run_cmd",
    "service.cli.eval_cmd",
    "service.cli.hunt_cmd",
    "service.cli.rules_cmd",
    "service.cli.config_cmd",
    "service.cli.anomaly_cmd",
    "service.cli.demo_cmd",
    "service.cli.client_cmd",
    "service.cli.completion_cmd",
)


def version_text() -> str:
    """``pipesentry X.Y.Z`` and whether the native screen is built (without it every event is decoded)."""
    try:
        version = importlib.metadata.version("pipesentry")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    native = importlib.util.find_spec("detectors._native") is not None
    return f"pipesentry {version} (native screen: {'built' if native else 'not built'})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipesentry",
        description="Sigma rules and anomaly checks over CI/CD and production logs.",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_text())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # sub-command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return USAGE
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
