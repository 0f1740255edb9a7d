"""A worker imports only runtime code: the engine never pulls in its training module, the
phantom generator or a progress bar, and the framework modules import in any order."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _fresh(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_runtime_engine_does_not_import_training_code():
    out = _fresh(
        "import sys\n"
        "from ai_engines.registry import get_engine\n"
        "engine = get_engine('ct_lung', device='cpu', threads=1)\n"
        "print(sorted(m for m in sys.modules if m.startswith('ai_engines')))\n"
    )
    loaded = eval(out)  # a printed list of module names
    assert "ai_engines.ct_lung.engine" in loaded
    for module in ("ai_engines.ct_lung.train", "ai_engines.ct_lung.synthetic",
                   "ai_engines.ct_lung.training", "ai_engines.ct_lung.evaluate",
                   "ai_engines.training"):
        assert module not in loaded, module
    # torch itself imports tqdm (torch.hub), so sys.modules cannot show it; none of the
    # engine's own runtime modules imports it.
    for name in loaded:
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom)}
        assert "tqdm" not in imported, name


def test_listing_engines_imports_no_torch():
    out = _fresh(
        "import sys\n"
        "from ai_engines.registry import engine_specs\n"
        "specs = engine_specs()\n"
        "print('ct_lung' in specs, 'torch' in sys.modules)\n"
    )
    assert out.split() == ["True", "False"]


@pytest.mark.parametrize("first", ["ai_engines.quality", "ai_engines.engine",
                                   "ai_engines.spec", "ai_engines.selection"])
def test_framework_modules_import_in_any_order(first):
    _fresh(f"import {first}\nimport ai_engines.engine, ai_engines.quality\n")
