"""Walking a dataset without decoding every element.

pydicom decodes an element when it is first accessed; walking with ``for element in ds``
decodes all of them.  A 600-slice structure set holds a million contour coordinates and a
source series 600 pixel-data elements, so walks that only care about a few VRs ask for those.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag


def vr_of(tag: int, raw_vr: str | None) -> str:
    """The element's VR, from the stream or (Implicit VR) the data dictionary; ``"UN"`` for a
    tag the dictionary does not know, the first choice for an ambiguous one."""
    if raw_vr:
        return raw_vr
    return _dictionary_vr(tag)


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0] if " or " in vr else vr


def elements_with_vr(ds: Dataset, vrs: frozenset[str]) -> Iterator[DataElement]:
    """The top-level elements of ``ds`` whose VR is in ``vrs``, decoded; the rest untouched."""
    for tag in list(ds.keys()):  # not elements(): that reads deferred values (pixel data)
        if vr_of(int(tag), ds.get_item(tag, keep_deferred=True).VR) in vrs:
            yield ds[tag]


def dictionary_vr(tag: int) -> str | None:
    """The dictionary VR of a public tag (first choice when ambiguous), ``None`` when unknown.

    A few attributes are UN in the dictionary itself (Selector UN Value): ``"UN"`` for those.
    """
    if (tag >> 16) % 2:
        return None
    try:
        dictionary_VR(tag)
    except KeyError:
        return None
    return _dictionary_vr(tag)


def decode_un(ds: Dataset, tag: int) -> str:
    """Re-read a UN element of a known public tag under its dictionary VR; return the VR.

    PS3.5 6.2.2: a UN value is encoded as Implicit VR Little Endian, whatever the transfer
    syntax. The element is replaced by a raw element that pydicom decodes that way (a sequence
    is parsed into items), so every rule sees its real VR and, for a sequence, its items.
    pydicom's own ``replace_un_with_known_vr`` stops at 64 KiB and is a global switch; this does
    not depend on it. Returns ``"UN"`` for a tag the dictionary does not know (or a private
    tag), leaving the element as it is.
    """
    # keep_deferred: looking at the VR must not read a deferred value (a 200 MiB pixel data
    # element stays in the received file until it is written out, or quarantined as a stream).
    raw = ds.get_item(tag, keep_deferred=True)
    vr = vr_of(int(tag), raw.VR)
    if vr != "UN":
        return vr
    known = dictionary_vr(int(tag))
    if known is None or known == "UN":
        return "UN"
    value = raw.value
    if isinstance(raw, RawDataElement) and value is None:
        value = ds[tag].value  # deferred read: pydicom loads the bytes from the file
        if ds[tag].VR != "UN":
            return ds[tag].VR
    if not isinstance(value, bytes | bytearray):
        return vr_of(int(tag), ds[tag].VR)
    ds[tag] = RawDataElement(BaseTag(int(tag)), known, len(value), bytes(value), 0, True, True)
    return known
