"""``pipesentry`` command line: a thin dispatcher over one module per sub-command.

Each sub-command module exposes ``register(subparsers)``, which adds its parser
and sets ``func`` to a callable taking the parsed namespace and returning an
exit code. Modules are imported lazily so a broken optional part cannot take the
whole CLI down, and :func:`main` imports only the module of the command it runs
(:data:`COMMANDS`): ``pipesentry eval`` never imports the HTTP client, the API or
Kafka. ``pipesentry --help``, completion and an unknown command build the whole parser.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from service.cli.output import EXIT_CODES_EPILOG, INTERRUPTED, USAGE
from service.gctune import tune_thresholds

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
COMMANDS: dict[str, str] = {
    "run": "service.cli.run_cmd",
    "eval": "service.cli.eval_cmd",
    "hunt": "service.cli.hunt_cmd",
    "rules": "service.cli.rules_cmd",
    "config": "service.cli.config_cmd",
    "anomaly": "service.cli.anomaly_cmd",
    "demo": "service.cli.demo_cmd",
    "alerts": "service.cli.client_cmd",
    "silences": "service.cli.client_cmd",
    "completion": "service.cli.completion_cmd",
}
"""The module registering each top-level command (``tests/unit/service/cli`` checks it against the parser)."""
QUICK_EXIT: frozenset[str] = frozenset({"eval", "rules"})
"""Commands after which :func:`entry` ends the process without tearing the interpreter down: they
have written and flushed everything, and freeing a large ruleset object by object at exit costs
about 0.07 s of a 0.8 s run."""


def version_text() -> str:
    """``pipesentry X.Y.Z`` and whether the native screen is built (without it every event is decoded)."""
    import importlib.metadata  # ~50 ms: only for --version

    try:
        version = importlib.metadata.version("pipesentry")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    native = importlib.util.find_spec("detectors._native") is not None
    return f"pipesentry {version} (native screen: {'built' if native else 'not built'})"


class _VersionAction(argparse.Action):
    """``--version``: the text is made only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show program's version number and exit", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> NoReturn:
        print(version_text(), file=sys.stdout)
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or (``command`` named in :data:`COMMANDS`) of that one only."""
    parser = argparse.ArgumentParser(
        prog="pipesentry",
        description="Sigma rules and anomaly checks over CI/CD and production logs.",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # sub-command not built yet
            raise
        module.register(subparsers)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command word of a command line (the first argument not an option; none takes a value here)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    tune_thresholds()  # every command: fewer collections (those that build a ruleset also freeze it)
    parser = build_parser(command_of(sys.argv[1:] if argv is None else argv))
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


def entry() -> NoReturn:
    """The ``pipesentry`` program (console script and ``python -m service.cli``): :func:`main`, then
    exit; after a :data:`QUICK_EXIT` command, with ``os._exit`` once the output is flushed."""
    code = main()
    if command_of(sys.argv[1:]) in QUICK_EXIT:
        import logging
        import os

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be written anyway
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
