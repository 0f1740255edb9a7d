"""Walking a dataset without decoding every element.

pydicom decodes an element when it is first accessed; walking with ``for element in ds``
decodes all of them.  A 600-slice structure set holds a million contour coordinates and a
source series 600 pixel-data elements, so walks that only care about a few VRs ask for those.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset


def elements_with_vr(ds: Dataset, vrs: frozenset[str]) -> Iterator[DataElement]:
    """The top-level elements of ``ds`` whose VR is in ``vrs``, decoded; the rest untouched.

    Elements read in Implicit VR carry no VR: public tags are looked up in the dictionary,
    private tags without one are skipped (pydicom would make them UN).
    """
    for raw in ds.elements():
        vr = raw.VR
        if vr is None:
            try:
                vr = dictionary_VR(raw.tag)
            except KeyError:
                continue
        if vr in vrs or any(v in vrs for v in vr.split(" or ")):
            yield ds[raw.tag]
