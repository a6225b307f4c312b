"""Every exception class of a layer derives from that layer's root, and ``retriable`` is class-level."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import detectors
import service
from detectors.errors import DetectorError
from service.errors import ServiceError


def _modules(package: ModuleType) -> list[ModuleType]:
    found = [package]
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        try:
            found.append(importlib.import_module(info.name))
        except ModuleNotFoundError as exc:  # an optional third-party dependency that is not installed
            if exc.name is not None and exc.name.split(".")[0] in ("detectors", "service"):
                raise
    return found


def _exception_classes(package: ModuleType) -> list[type[BaseException]]:
    classes = []
    for module in _modules(package):
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                classes.append(obj)
    return classes


DETECTOR_ERRORS = _exception_classes(detectors)
SERVICE_ERRORS = _exception_classes(service)


def test_the_walk_finds_the_known_classes() -> None:
    names = {c.__name__ for c in DETECTOR_ERRORS + SERVICE_ERRORS}
    assert {"CompileError", "BadTimestamp", "ConfigError", "SinkError", "SpoolFull", "DecodeError"} <= names


@pytest.mark.parametrize("cls", DETECTOR_ERRORS, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_detector_exceptions_derive_from_detector_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, DetectorError)


@pytest.mark.parametrize("cls", SERVICE_ERRORS, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_service_exceptions_derive_from_service_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, ServiceError)
    assert isinstance(cls.retriable, bool)  # type: ignore[attr-defined]


def test_retriable_is_a_class_fact() -> None:
    from service.alerting.router import RouterError
    from service.alerting.sinks.base import SinkError, SinkRejected, sink_error
    from service.alerting.spool import SpoolError, SpoolFull
    from service.config import ConfigError
    from service.decoders import DecodeError

    assert SinkError.retriable and SpoolError.retriable and SpoolFull.retriable and RouterError.retriable
    assert not (SinkRejected.retriable or ConfigError.retriable or DecodeError.retriable)
    assert isinstance(sink_error("x", 503), SinkError) and sink_error("x", 503).retriable
    assert sink_error("x", None).retriable and sink_error("x", 429).retriable
    rejected = sink_error("x", 400)
    assert isinstance(rejected, SinkRejected) and isinstance(rejected, SinkError) and not rejected.retriable


def test_specific_bases_still_catch() -> None:
    """Callers that catch ``ValueError``/``OSError`` keep working after the re-parenting."""
    from detectors.event import BadTimestamp, parse_timestamp
    from service.state_store import StateStoreError

    with pytest.raises(ValueError):
        parse_timestamp("not a time")
    with pytest.raises(BadTimestamp) as info:
        parse_timestamp("not a time")
    assert isinstance(info.value, DetectorError)
    assert issubclass(StateStoreError, OSError) and StateStoreError.retriable


def test_detector_error_carries_location() -> None:
    from detectors.sigma.errors import CompileError

    exc = CompileError("rule has no condition", rule_id="r-1")
    assert str(exc) == "rule has no condition"
    exc.at(source="rules/a.yml", rule_id="ignored", field="cmd")
    assert (exc.source, exc.rule_id, exc.context) == ("rules/a.yml", "r-1", {"field": "cmd"})
    assert exc.location == "rules/a.yml: rule r-1"
    assert DetectorError("x").location == ""
