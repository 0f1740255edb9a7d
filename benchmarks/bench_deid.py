"""De-identification cost per instance, as the receiver pays it (read from a file with large
values deferred, then pseudonymized), for a synthetic CT slice.

    python benchmarks/bench_deid.py [--slices 200] [--size 512]

Prints milliseconds per instance (median of the slices, after one warm-up pass).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom import dcmread  # noqa: E402

from dicom_node.config import DeidSettings  # noqa: E402
from dicom_node.deid import Pseudonymizer  # noqa: E402
from dicom_node.sample_data import (  # noqa: E402
    ct_series_datasets,
    phantom_chest_hu,
    write_series,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    pseudonymizer = Pseudonymizer(DeidSettings(), b"benchmark-site-secret-0123456789")
    with tempfile.TemporaryDirectory() as tmp:
        files = write_series(ct_series_datasets(
            phantom_chest_hu((args.slices, args.size, args.size))), Path(tmp))
        for path in files[:10]:  # warm-up: table compiled, caches filled
            pseudonymizer.pseudonymize(dcmread(path, defer_size="256 KB"))
        times = []
        for path in files:
            t0 = time.perf_counter()
            pseudonymizer.pseudonymize(dcmread(path, defer_size="256 KB"))
            times.append(time.perf_counter() - t0)
    print(f"{len(files)} CT slices {args.size}x{args.size}: read + de-identify "
          f"median {1000 * statistics.median(times):.2f} ms, "
          f"p95 {1000 * sorted(times)[int(0.95 * len(times))]:.2f} ms per instance")


if __name__ == "__main__":
    main()
