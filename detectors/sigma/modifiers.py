"""Spec modifiers that pySigma lacks or encodes differently, registered under private names.

* ``utf16le`` is the spec's name of pySigma's ``wide``.
* ``utf16`` before ``base64``/``base64offset`` must encode the byte order mark as the
  bytes ``FF FE`` (spec); pySigma turns U+FEFF into UTF-8 ``EF BB BF`` there. Such chains
  use ``_ps_utf16_bom``, whose value yields the right bytes to the base64 modifiers.

Only new keys are added to pySigma's modifier registry; existing names keep their meaning.
"""

from __future__ import annotations

from typing import Any

from sigma import modifiers as sigma_modifiers
from sigma.exceptions import SigmaValueError
from sigma.modifiers import SigmaValueModifier
from sigma.types import SigmaString

BOM_MODIFIER = "_ps_utf16_bom"
_ALIASES = {"utf16le": "wide"}
_BASE64 = ("base64", "base64offset")


class _BomUtf16String(SigmaString):
    """A plain string whose bytes are its UTF-16LE encoding behind an FF FE byte order mark."""

    def __bytes__(self) -> bytes:
        return b"\xff\xfe" + self.to_plain().encode("utf-16-le")

    def __len__(self) -> int:
        return len(bytes(self))


class Utf16BomModifier(SigmaValueModifier[SigmaString, SigmaString]):
    """``utf16`` followed by a base64 modifier."""

    def modify(self, val: SigmaString) -> SigmaString:
        if val.contains_special():
            raise SigmaValueError("utf16 with base64 encoding is not allowed on values with wildcards",
                                  source=self.source)
        return _BomUtf16String(val.to_plain().replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?"))


sigma_modifiers.modifier_mapping.setdefault(BOM_MODIFIER, Utf16BomModifier)


def rewrite_key(key: Any) -> Any:
    """Rename modifiers of one detection key (``field|mod|mod``) to what pySigma must see."""
    if not isinstance(key, str) or "|" not in key:
        return key
    head, *mods = key.split("|")
    mods = [_ALIASES.get(m, m) for m in mods]
    for i, mod in enumerate(mods):
        if mod == "utf16" and any(m in _BASE64 for m in mods[i + 1:]):
            mods[i] = BOM_MODIFIER
    return "|".join([head, *mods])


def rewrite_detection(section: Any) -> Any:
    """Apply :func:`rewrite_key` through a detection section (maps, lists of maps)."""
    if isinstance(section, dict):
        return {rewrite_key(k): rewrite_detection(v) for k, v in section.items()}
    if isinstance(section, list):
        return [rewrite_detection(v) for v in section]
    return section
