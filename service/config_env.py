"""``${VAR}`` references in the YAML config, expanded once where the file is read.

Grammar, inside any string value (keys are never expanded):

- ``${NAME}``: the environment variable ``NAME``; unset is an error naming the
  variable and the config key (never any value);
- ``${NAME:-default}``: ``default`` when ``NAME`` is unset or empty;
- ``$${``: a literal ``${`` (nothing is expanded after it);
- a lone ``$`` or ``$NAME`` without braces is left as it is.

A value wholly made of one reference stays a string: YAML has already decided its
type, and a secret such as ``007`` must not turn into a number. Expanded values
are returned with their key so the caller can register the credential-like ones
with the log redactor (``SecretStr`` fields are registered anyway).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from service.errors import ServiceError

_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigEnvError(ServiceError):
    """A ``${VAR}`` reference cannot be expanded (unset variable, bad syntax); not retriable."""


def expand_env(data: Any, environ: Mapping[str, str], path: str = "") -> tuple[Any, list[tuple[str, str]]]:
    """``data`` with every ``${...}`` in its string values expanded, and the (key, value) pairs expanded."""
    expanded: list[tuple[str, str]] = []
    return _walk(data, environ, path, expanded), expanded


def _walk(value: Any, environ: Mapping[str, str], path: str, out: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        return _expand(value, environ, path, out) if "${" in value else value
    if isinstance(value, dict):
        return {k: _walk(v, environ, f"{path}.{k}" if path else str(k), out) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, environ, f"{path}[{i}]", out) for i, v in enumerate(value)]
    return value


def _expand(text: str, environ: Mapping[str, str], path: str, out: list[tuple[str, str]]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        body = match.group(1)
        name, sep, default = body.partition(":-")
        if not _NAME.fullmatch(name):
            raise ConfigEnvError(f"config key {path or '(top level)'}: invalid reference ${{{name}}} "
                                 "(expected ${NAME} or ${NAME:-default}; write $${ for a literal ${)")
        found = environ.get(name)
        if found is None or (sep and found == ""):
            if not sep:
                raise ConfigEnvError(f"config key {path or '(top level)'}: environment variable {name} is not set "
                                     f"(use ${{{name}:-default}} for a default)")
            found = default
        out.append((path, found))
        return found

    return _REF.sub(one, text)
