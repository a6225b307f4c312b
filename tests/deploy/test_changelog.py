"""CHANGELOG.md, the release notes the operations guide sends upgraders to: Keep a Changelog
headings, the newest first, a section for the version pyproject.toml names, links defined."""

from __future__ import annotations

import re
import tomllib

from packaging.version import Version

from tests.deploy.tools import ROOT

CHANGELOG = ROOT / "CHANGELOG.md"
HEADING = re.compile(r"^## \[(?P<name>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?\s*$", re.MULTILINE)


def sections() -> list[tuple[str, str | None]]:
    return [(m["name"], m["date"]) for m in HEADING.finditer(CHANGELOG.read_text(encoding="utf-8"))]


def test_unreleased_comes_first_then_versions_newest_first() -> None:
    found = sections()
    assert found[0] == ("Unreleased", None)
    released = found[1:]
    assert released, "no released version"
    assert all(date for _, date in released), "a released version without its date"
    versions = [Version(name) for name, _ in released]
    assert versions == sorted(versions, reverse=True)
    dates = [date for _, date in released]
    assert dates == sorted(dates, reverse=True)


def test_the_project_version_has_a_section() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert version in {name for name, _ in sections()}


def test_every_section_has_a_link_and_upgrade_notes_lead_unreleased() -> None:
    text = CHANGELOG.read_text(encoding="utf-8")
    for name, _ in sections():
        assert re.search(rf"^\[{re.escape(name)}\]: https://", text, re.MULTILINE), name
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    assert unreleased.lstrip().startswith("### Upgrade notes")


def test_the_operations_guide_points_at_it() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert "release notes ([`CHANGELOG.md`](../CHANGELOG.md))" in guide
