"""Install engine packages for a test the way a wheel does: a ``*.dist-info`` folder with an
``entry_points.txt`` under the ``dicom_node.engines`` group, on ``sys.path``.

``importlib.metadata`` finds it exactly as it finds an installed wheel, so the node's
discovery is exercised for real; a child process (the node started by a test) sees it through
``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

from ai_engines.spec import ENTRY_POINT_GROUP


def write_distribution(root: Path, name: str, engines: dict[str, str]) -> Path:
    """Write ``<root>/<name>-0.1.dist-info`` registering ``engines`` (name -> "module:SPEC")."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{k} = {v}" for k, v in engines.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


@contextlib.contextmanager
def installed(root: Path, name: str, engines: dict[str, str]) -> Iterator[Path]:
    """``engines`` registered through a distribution in ``root`` while the block runs."""
    write_distribution(root, name, engines)
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        importlib.invalidate_caches()
