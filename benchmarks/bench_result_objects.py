"""Time to encode result objects with a voxel map: Parametric Map alone, and every object.

Usage::

    python benchmarks/bench_result_objects.py [--slices 100] [--size 512]

A synthetic CT of ``slices`` x ``size`` x ``size`` gets one float map (a radiomic feature map,
random values) and one spherical lesion with a probability.  Prints seconds per step and the
Parametric Map's file size.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np

from ai_engines import codes
from ai_engines.codes import Code
from ai_engines.findings import EngineIdentity, Findings, Measurement, Segment, VoxelMap
from dicom_node.results import ResultOptions, build_result_objects
from dicom_node.results.pm import build_parametric_maps
from dicom_node.sample_data import ct_series_datasets

JOINT_ENTROPY = Code("TU0O", "IBSI", "Joint entropy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    shape = (args.slices, args.size, args.size)
    source = ct_series_datasets(np.full(shape, -700.0))
    values = np.random.default_rng(0).random(shape).astype(np.float32)
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    lesion = ((k - shape[0] // 2) * 2.5) ** 2 + ((j - shape[1] // 2) * 0.7) ** 2 + (
        (i - shape[2] // 2) * 0.7) ** 2 <= 15.0**2
    findings = Findings(
        engine=EngineIdentity("bench", "0", "none", "0" * 64),
        source_series_uid=str(source[0].SeriesInstanceUID),
        segments=(Segment(
            label="GTV_1", description="lesion", category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            property_type=codes.NEOPLASM, rt_interpreted_type="GTV", color_rgb=(255, 0, 0),
            mask=lesion, tracking_id="GTV_1", probability=0.8,
            measurements=(Measurement(codes.VOLUME, 14.1, codes.UNIT_ML),)),),
        maps=(VoxelMap("GLCM_Entropy", "GLCM joint entropy", JOINT_ENTROPY, codes.UNIT_NONE,
                       values),),
    )
    options = ResultOptions(device_observer_uid="2.25.1")
    t0 = time.perf_counter()
    (pmap,) = build_parametric_maps(findings, source, options)
    t1 = time.perf_counter()
    buffer = io.BytesIO()
    pmap.save_as(buffer, enforce_file_format=True)
    t2 = time.perf_counter()
    print(f"Parametric Map {shape}: build {t1 - t0:.2f} s, write {t2 - t1:.2f} s, "
          f"{len(buffer.getvalue()) / 1e6:.0f} MB")
    t3 = time.perf_counter()
    objects = build_result_objects(findings, source, options)
    print(f"all objects ({', '.join(ds.Modality for ds in objects)}): "
          f"{time.perf_counter() - t3:.2f} s")


if __name__ == "__main__":
    main()
