"""Decoders turn one raw message (bytes) into zero or more events.

The registry is an open name -> factory mapping: a factory takes the input's
``decoder.options`` and returns a ``Decoder``, a plain callable
``bytes -> list[dict]`` that raises :class:`DecodeError` with a fixed reason word
(it becomes a metric label and the dead-letter ``error`` header). Factories run
once per input, so per-message work is only the call.

Other modules add formats with :func:`register_decoder`, either a factory
(``factory=``) or a ready decoder that takes no options (``fn``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from service.errors import ServiceError

Decoder = Callable[[bytes], list[dict[str, Any]]]
DecoderFactory = Callable[[Mapping[str, Any]], Decoder]


class DecodeError(ServiceError):
    """A message that cannot become events. ``reason`` is a short fixed word (metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def positive_int(options: Mapping[str, Any], name: str, default: int, decoder: str) -> int:
    """Option ``name`` as a positive integer; anything else (``{}``, ``true``, ``"x"``, ``-1``) is a ValueError."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{decoder} decoder option {name} must be a positive integer")
    return value


_REGISTRY: dict[str, DecoderFactory] = {}
_OPTIONAL_MODULES = ("service.decoders.findings",)
_loaded_optional = False


def register_decoder(name: str, fn: Decoder | None = None, *, factory: DecoderFactory | None = None,
                     replace: bool = False) -> None:
    """Add a decoder under ``name``: ``fn`` (no options accepted) or ``factory(options) -> Decoder``."""
    if (fn is None) == (factory is None):
        raise TypeError("register_decoder needs exactly one of fn or factory")
    if name in _REGISTRY and not replace:
        raise ValueError(f"decoder {name!r} is already registered")
    if fn is not None:
        decode = fn

        def _fixed(options: Mapping[str, Any]) -> Decoder:
            if options:
                raise ValueError(f"decoder {name!r} takes no options (got {sorted(options)})")
            return decode

        factory = _fixed
    assert factory is not None
    _REGISTRY[name] = factory


def _load_optional() -> None:
    """Import decoder modules that register themselves (absent ones are skipped)."""
    global _loaded_optional
    if _loaded_optional:
        return
    _loaded_optional = True
    for module in _OPTIONAL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def decoder_names() -> list[str]:
    _load_optional()
    return sorted(_REGISTRY)


def build_decoder(name: str, options: Mapping[str, Any] | None = None) -> Decoder:
    """The decoder ``name`` configured with ``options``.

    Raises ``KeyError`` for an unknown name and ``ValueError`` for bad options,
    both with a message fit for a config error; a factory's stray ``TypeError`` becomes one too.
    """
    _load_optional()
    factory = _REGISTRY.get(name)
    if factory is None:
        raise KeyError(f"unknown decoder {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    try:
        return factory(dict(options or {}))
    except TypeError as exc:  # a third-party factory tripping over an option of the wrong type
        raise ValueError(f"decoder {name!r}: bad option type: {exc}") from None


def _register_builtins() -> None:
    from service.decoders import json as json_decoder
    from service.decoders import regex, syslog

    register_decoder("json", factory=json_decoder.factory)
    register_decoder("ndjson", factory=json_decoder.ndjson_factory)
    register_decoder("syslog", factory=syslog.factory)
    register_decoder("regex", factory=regex.factory)
    register_decoder("text", factory=regex.text_factory)


_register_builtins()

__all__ = ["DecodeError", "Decoder", "DecoderFactory", "build_decoder", "decoder_names", "positive_int",
           "register_decoder"]
