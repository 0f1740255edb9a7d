"""Settings shared by every result-object writer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydicom.uid import UID

SrStorage = Literal["comprehensive3d", "comprehensive"]

# Offsets from ``series_number_base``: one new series per object family.
SEG_SERIES_OFFSET = 1
RTSTRUCT_SERIES_OFFSET = 2
SR_SERIES_OFFSET = 3
SC_SERIES_OFFSET = 4
PM_SERIES_OFFSET = 5
_LARGEST_IS = 2**31 - 1


@dataclass(frozen=True)
class ResultOptions:
    """How the node identifies itself in the result objects it writes.

    Parameters
    ----------
    manufacturer, manufacturer_model_name, software_version, device_serial_number
        General / Enhanced General Equipment of every object (LO, ASCII, <= 64 chars).
    device_observer_uid
        Stable Device Observer UID (TID 1004) of this installed node; must stay the same
        across runs so readers can group results by device.  Required for the SR.
    series_number_base
        SeriesNumber of each new series is ``base + offset`` (SEG +1, RTSTRUCT +2, SR +3,
        secondary capture +4, parametric map +5).
    sr_storage
        ``"comprehensive3d"`` (Comprehensive 3D SR, IHE AIR) or ``"comprehensive"`` for
        PACS that do not accept the 3D class.
    include_secondary_capture
        Also write the key-image secondary captures.
    institution_label
        InstitutionName of the equipment that created the results (empty: not written).
    """

    manufacturer: str = "dicom-ai-node"
    manufacturer_model_name: str = "dicom-ai-node"
    software_version: str = "0.1.0"
    device_serial_number: str = "0"
    device_observer_uid: str = ""
    series_number_base: int = 9000
    sr_storage: SrStorage = "comprehensive3d"
    include_secondary_capture: bool = True
    institution_label: str = ""

    def __post_init__(self) -> None:
        for name in ("manufacturer", "manufacturer_model_name", "software_version",
                     "device_serial_number", "institution_label"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.isascii() or len(value) > 64:
                raise ValueError(f"ResultOptions.{name} must be ASCII text of at most 64 characters")
            if "\\" in value:
                raise ValueError(f"ResultOptions.{name} must not contain a backslash")
        for name in ("manufacturer", "manufacturer_model_name", "software_version",
                     "device_serial_number"):
            if not getattr(self, name).strip():
                raise ValueError(f"ResultOptions.{name} must not be empty (Type 1 in SEG)")
        if self.sr_storage not in ("comprehensive3d", "comprehensive"):
            raise ValueError(
                f"ResultOptions.sr_storage must be 'comprehensive3d' or 'comprehensive', "
                f"got {self.sr_storage!r}"
            )
        if not 0 <= self.series_number_base <= _LARGEST_IS - PM_SERIES_OFFSET:
            raise ValueError("ResultOptions.series_number_base is out of the IS range")
        if self.device_observer_uid and not UID(self.device_observer_uid).is_valid:
            raise ValueError("ResultOptions.device_observer_uid is not a valid UID")

    def series_number(self, offset: int) -> int:
        """SeriesNumber of the result series at ``offset`` from the base."""
        return self.series_number_base + offset
