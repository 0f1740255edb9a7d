"""What an engine package declares about itself, without importing torch or its weights.

Each engine package exposes one :class:`EngineSpec` (conventionally ``SPEC`` in its
``spec.py``) and registers it under the entry-point group :data:`ENTRY_POINT_GROUP`::

    [project.entry-points."dicom_node.engines"]
    ct_lung = "ai_engines.ct_lung.spec:SPEC"

so a site can install an engine as its own wheel and the node finds it.  The node lists
specs (and their model cards) and routes studies on ``acceptance`` without constructing the
engine; ``factory`` names the class that is imported only when a job needs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ai_engines.engine import Acceptance

ENTRY_POINT_GROUP = "dicom_node.engines"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class EngineSpec:
    """An engine's identity and declarations.

    Parameters
    ----------
    name
        The one name of the engine everywhere (routes, findings, CLI): lowercase,
        ``[a-z][a-z0-9_]*``, e.g. ``"ct_lung"``.
    version
        Engine version (semantic); the model versions are on the model cards.
    title
        A line for people, e.g. "CT lungs and NSCLC GTV (Primakov et al. 2022)".
    acceptance
        What the engine can read; routing and header-first selection use it.
    models
        Names of the model files the engine loads (``ai_engines.models`` looks them up).
    factory
        ``"module:Class"``; the class is constructed with
        ``(model_dir=..., device=..., threads=...)``.
    training
        ``"module:object"`` of the engine's training hook (an
        :class:`ai_engines.training.EngineTraining`), imported only by ``dicom-node
        train-model`` / ``evaluate-model``; ``None`` when the engine cannot be trained here.
        The module may import torch and the engine's phantom generator: a worker never
        imports it.
    consumes_results
        The engine also measures the regions other engines find in the same study (their
        SEG or RTSTRUCT results, read back by the node like received ones): its job is
        queued whenever another engine's is, even without a received RTSTRUCT/SEG, and runs
        after every other job of that study revision has finished.
    """

    name: str
    version: str
    title: str
    acceptance: Acceptance
    models: tuple[str, ...]
    factory: str
    training: str | None = None
    consumes_results: bool = False

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"engine name {self.name!r} must match {NAME_PATTERN.pattern}")
        for target in (self.factory, self.training):
            if target is not None and target.count(":") != 1:
                raise ValueError(f"engine {self.name}: {target!r} is not 'module:object'")
