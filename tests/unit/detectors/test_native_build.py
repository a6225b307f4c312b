"""The native screen in a checkout is one build.

Python imports ``detectors._native`` by suffix order (``.cpython-311-...so`` before
``.abi3.so``), so with two builds side by side (an editable build and a copied wheel module,
or an old one) the one loaded may be stale, and stale code with the same plan version runs
unnoticed. ``make install`` removes every build before building; this test fails while two
sit side by side.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.sigma.screen import AVAILABLE

DETECTORS = Path(__file__).resolve().parents[3] / "detectors"


@pytest.mark.skipif(not AVAILABLE, reason="the native screen is not built (no Rust toolchain)")
def test_the_loaded_native_screen_is_the_only_build_in_the_package() -> None:
    from detectors import _native  # type: ignore[attr-defined]

    builds = sorted(path.name for path in DETECTORS.glob("_native*.so"))
    loaded = Path(_native.__file__).resolve()
    if loaded.parent != DETECTORS.resolve():
        pytest.skip(f"detectors._native loaded from {loaded.parent}, not this checkout")
    assert builds == [loaded.name], f"more than one native build in detectors/: {builds} (run make install-dev)"

