"""Shared builders for the MR glioma engine tests."""

from __future__ import annotations

import numpy as np

from ai_engines.volume import AcquisitionFacts, SeriesVolume, SliceReference, VolumeGeometry


def mr_series(
    uid: str, description: str | None = None, *, n_slices: int = 20, spacing: float = 5.0, modality: str = "MR",
    tr: float | None = None, te: float | None = None, ti: float | None = None, agent: str | None = None,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY"), protocol: str | None = None, sequence_name: str | None = None,
) -> SeriesVolume:
    """A small MR series whose headers say what the test needs (voxels are irrelevant here)."""
    origins = np.array([[0.0, 0.0, k * spacing] for k in range(n_slices)])
    geometry = VolumeGeometry(origins, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0), spacing)
    facts = AcquisitionFacts(
        modality=modality, series_description=description, protocol_name=protocol, sequence_name=sequence_name,
        repetition_time_ms=tr, echo_time_ms=te, inversion_time_ms=ti, contrast_agent=agent, image_type=image_type,
    )
    slices = tuple(SliceReference("1.2.840.10008.5.1.4.1.1.4", f"{uid}.{k}") for k in range(n_slices))
    return SeriesVolume(uid, "1.2.3", np.zeros((n_slices, 4, 4), np.int16), geometry, slices, facts)
