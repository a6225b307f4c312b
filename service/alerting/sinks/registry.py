"""Sink and receiver registries: a name, a settings model and a builder per kind of sink.

Like the decoder registry (``service.decoders``), the registry is an open
name -> entry mapping. A sink module registers itself at import::

    register_sink("stdout", StdoutSinkSettings, build)

``StdoutSinkSettings`` subclasses :class:`~.settings.SinkSettings` with
``type: Literal["stdout"] = "stdout"``; ``build(settings, context)`` returns
the sink object without doing I/O (the worker calls its ``start()``). Every
module of this package is imported before the alerting config model is built,
so the model's ``sinks``/``receivers`` unions are exactly what is registered:
adding a sink is one new module here (plus docs and a test, which
``tests/unit/service/alerting/sinks/test_registry.py`` insists on). A name registered after the
model was built could never be configured, so that raises.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar, Union

from pydantic import Field

from .base import Sink
from .settings import ReceiverSettings, SinkSettings

if TYPE_CHECKING:
    from ..store import AlertStore

S = TypeVar("S", bound=SinkSettings)


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a builder may need besides its settings (shared objects of the router)."""

    store: AlertStore


@dataclass(frozen=True, slots=True)
class Registration(Generic[S]):
    name: str
    settings: type[S]
    build: Callable[[S, SinkContext], Sink]


class Registry:
    """One registry per role: ``sink`` (alert documents) or ``receiver`` (pages)."""

    def __init__(self, role: str, base: type[SinkSettings]) -> None:
        self.role = role
        self.base = base
        self._entries: dict[str, Registration[Any]] = {}
        self._frozen = False
        """Set once the config model is built from the registry: a later name could not be configured."""

    def register(self, name: str, settings: type[S], build: Callable[[S, SinkContext], Sink], *,
                 replace: bool = False) -> None:
        """Add ``name``: ``settings`` must subclass the role's base with ``type`` defaulting to ``name``."""
        if not issubclass(settings, self.base):
            raise TypeError(f"{self.role} {name!r}: settings must subclass {self.base.__name__}")
        declared = settings.model_fields["type"].default
        if declared != name:
            raise ValueError(f"{self.role} {name!r}: {settings.__name__}.type defaults to {declared!r}")
        if name in self._entries and not replace:
            raise ValueError(f"{self.role} {name!r} is already registered")
        if self._frozen and name not in self._entries:
            raise RuntimeError(f"{self.role} {name!r} registered after the alerting config model was built: "
                               f"define it in a module of {__name__.rsplit('.', 1)[0]}")
        self._entries[name] = Registration(name, settings, build)

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self._entries)

    def get(self, name: str) -> Registration[Any]:
        load_builtins()
        entry = self._entries.get(name)
        if entry is None:
            raise KeyError(f"unknown {self.role} type {name!r} (known: {', '.join(sorted(self._entries))})")
        return entry

    def build(self, settings: SinkSettings, context: SinkContext) -> Sink:
        entry = self.get(settings.type)
        if not isinstance(settings, entry.settings):
            raise TypeError(f"{self.role} {settings.type!r} expects {entry.settings.__name__}, "
                            f"got {type(settings).__name__}")
        return entry.build(settings, context)

    def settings_union(self) -> Any:
        """The pydantic type of one configured entry: the registered models, told apart by ``type``."""
        models = tuple(self.get(name).settings for name in self.names())
        self._frozen = True
        if len(models) == 1:
            return models[0]
        return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 (a runtime tuple)


SINKS = Registry("sink", SinkSettings)
RECEIVERS = Registry("receiver", ReceiverSettings)
_loaded = False


def register_sink(name: str, settings: type[S], build: Callable[[S, SinkContext], Sink], *,
                  replace: bool = False) -> None:
    """Register a record sink (it receives every alert document)."""
    if issubclass(settings, ReceiverSettings):
        raise TypeError(f"sink {name!r}: receiver settings belong in register_receiver")
    SINKS.register(name, settings, build, replace=replace)


def register_receiver(name: str, settings: type[S], build: Callable[[S, SinkContext], Sink], *,
                      replace: bool = False) -> None:
    """Register a paging receiver (it receives the page records routes send it)."""
    RECEIVERS.register(name, settings, build, replace=replace)


def load_builtins() -> None:
    """Import every module of this package once; sink modules register themselves."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = __name__.rsplit(".", 1)[0]
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{info.name}")


__all__ = ["RECEIVERS", "SINKS", "Registration", "Registry", "SinkContext", "load_builtins",
           "register_receiver", "register_sink"]
