"""Walking a dataset without decoding every element.

pydicom decodes an element when it is first accessed; walking with ``for element in ds``
decodes all of them.  A 600-slice structure set holds a million contour coordinates and a
source series 600 pixel-data elements, so walks that only care about a few VRs ask for those.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset


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
    for raw in ds.elements():
        if vr_of(int(raw.tag), raw.VR) in vrs:
            yield ds[raw.tag]
