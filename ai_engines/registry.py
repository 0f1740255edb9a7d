"""Which engines this installation has: the packages registered under the entry-point group
``dicom_node.engines`` (:data:`ai_engines.spec.ENTRY_POINT_GROUP`).

An engine package declares itself with an :class:`~ai_engines.spec.EngineSpec`; a site
installs an engine as its own wheel and the node finds it here.  Listing the specs (or
declining an unknown engine) never imports torch or model weights: the engine class named by
``EngineSpec.factory`` is imported only when a job needs it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from ai_engines.engine import Engine
from ai_engines.spec import ENTRY_POINT_GROUP, EngineSpec

log = logging.getLogger("ai_engines.registry")


class EngineNotInstalled(LookupError):
    """A job or command names an engine this installation does not have."""

    def __init__(self, name: str, installed: list[str] | None = None) -> None:
        self.name = name
        listed = ", ".join(installed if installed is not None else available_engines()) or "none"
        super().__init__(f"engine {name!r} is not installed (installed: {listed})")


class EngineSpecError(RuntimeError):
    """An installed engine package whose spec or factory cannot be used."""


@dataclass(frozen=True)
class Discovery:
    """What the entry points hold: usable specs by name, and the reasons for the others."""

    specs: dict[str, EngineSpec]
    problems: dict[str, str]  # entry-point name -> why it was left out


def load_object(target: str) -> object:
    """Import ``"module:attribute"`` (``attribute`` may be dotted)."""
    module_name, _, attribute = target.partition(":")
    value: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


def discover() -> Discovery:
    """Read every ``dicom_node.engines`` entry point.

    An entry point that fails to import, is not an :class:`EngineSpec`, whose name differs
    from its spec's name, or that repeats another engine's name is left out with a reason
    (logged once per call), so one broken package cannot take the others down.
    """
    specs: dict[str, EngineSpec] = {}
    problems: dict[str, str] = {}
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: (p.name, p.value)):
        try:
            spec = point.load()
        except Exception as exc:  # an engine package's import error is its own, not ours
            problems[point.name] = f"cannot import {point.value}: {type(exc).__name__}: {exc}"
            continue
        if not isinstance(spec, EngineSpec):
            problems[point.name] = f"{point.value} is a {type(spec).__name__}, not an EngineSpec"
        elif spec.name != point.name:
            problems[point.name] = f"entry point {point.name!r} holds the spec of {spec.name!r}"
        elif spec.name in specs and specs[spec.name] != spec:
            problems[point.name] = f"two packages register an engine named {spec.name!r}"
            specs.pop(spec.name)
        elif point.name not in problems:
            specs[spec.name] = spec
    for name, reason in problems.items():
        log.warning("engine %s left out: %s", name, reason)
    return Discovery(specs, problems)


def engine_specs() -> dict[str, EngineSpec]:
    """The installed engines' specs by name (sorted)."""
    return discover().specs


def available_engines() -> list[str]:
    """Names of the installed engines, sorted."""
    return sorted(engine_specs())


def get_spec(name: str) -> EngineSpec:
    """The spec of engine ``name``.

    Raises
    ------
    EngineNotInstalled
    """
    specs = engine_specs()
    if name not in specs:
        raise EngineNotInstalled(name, sorted(specs))
    return specs[name]


def get_engine(name: str, model_dir: Path | None = None, device: str = "auto",
               threads: int | None = None, options: Mapping[str, object] | None = None,
               ) -> Engine:
    """Construct the engine called ``name`` from its spec's factory.

    Parameters
    ----------
    name
        Engine name as in its spec, e.g. ``"ct_lung"``.
    model_dir
        Site folder with validated weights; files there replace packaged ones by name.
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
    threads
        CPU threads for inference (``None``: torch's default, one per core).
    options
        Further keyword arguments of the engine's constructor from the node configuration
        (e.g. the radiomics settings).

    Raises
    ------
    EngineNotInstalled
        ``name`` is not an installed engine (e.g. ``mr_glioma`` before it exists).
    EngineSpecError
        The factory is not an :class:`Engine` class or disagrees with the spec on the name.
    ai_engines.models.ModelError
        The engine's model is missing or fails its checksum.
    """
    spec = get_spec(name)
    engine_class = load_object(spec.factory)
    if not (isinstance(engine_class, type) and issubclass(engine_class, Engine)):
        raise EngineSpecError(f"engine {name}: factory {spec.factory} is not an Engine class")
    if engine_class.name != spec.name:
        raise EngineSpecError(
            f"engine {name}: factory {spec.factory} calls itself {engine_class.name!r}")
    return engine_class(model_dir=model_dir, device=device, threads=threads, **(options or {}))
