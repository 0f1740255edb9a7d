"""Which engines this installation has, by the names the node's routes use.

Engines are imported only when asked for, so listing them (or declining an unknown one)
never loads torch or model weights.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ai_engines.engine import Engine

# name -> "module:class"; the class is constructed with (model_dir=..., device=..., threads=...).
_ENGINES: dict[str, str] = {
    "ct_lung": "ai_engines.ct_lung.engine:CtLungEngine",
}


class EngineNotInstalled(LookupError):
    """A route names an engine this installation does not have."""

    def __init__(self, name: str) -> None:
        self.name = name
        installed = ", ".join(sorted(_ENGINES)) or "none"
        super().__init__(f"engine {name!r} is not installed (installed: {installed})")


def available_engines() -> list[str]:
    """Names of the installed engines, sorted."""
    return sorted(_ENGINES)


def get_engine(name: str, model_dir: Path | None = None, device: str = "auto",
               threads: int | None = None) -> Engine:
    """Construct the engine called ``name``.

    Parameters
    ----------
    name
        Engine name as used in routes, e.g. ``"ct_lung"``.
    model_dir
        Site folder with validated weights; files there replace packaged ones by name.
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
    threads
        CPU threads for inference (``None``: torch's default, one per core).

    Raises
    ------
    EngineNotInstalled
        ``name`` is not an installed engine (e.g. ``mr_glioma`` before it exists).
    ai_engines.models.ModelError
        The engine's model is missing or fails its checksum.
    """
    target = _ENGINES.get(name)
    if target is None:
        raise EngineNotInstalled(name)
    module_name, class_name = target.split(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class(model_dir=model_dir, device=device, threads=threads)
