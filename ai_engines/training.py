"""What an engine supplies to ``dicom-node train-model`` and ``evaluate-model``.

An engine that can be trained names an :class:`EngineTraining` object in its spec
(``EngineSpec.training = "module:object"``).  That module may import torch, the engine's
phantom generator and progress bars: only the two CLI commands import it, never a worker.
The node does the DICOM side (a site's series with RTSTRUCT/SEG ground truth become
:class:`LabelledVolume` objects); the engine turns them, or its synthetic cases, into what its
trainer reads, trains, and scores its runtime engine.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ai_engines.engine import Engine
from ai_engines.volume import SeriesVolume


@dataclass(frozen=True)
class LabelledVolume:
    """One image series and a ground-truth mask on its grid (from an RTSTRUCT or SEG)."""

    volume: SeriesVolume
    mask: np.ndarray
    source: str  # "RTSTRUCT" or "SEG"
    roi_names: tuple[str, ...]


@dataclass(frozen=True)
class Evaluation:
    """Per-case results, their summary, and one printable line per case."""

    cases: list[Any]
    summary: dict[str, Any]  # JSON-like; figures may be grouped (per confounder, per view)
    lines: list[str] = field(default_factory=list)


class EngineTraining(ABC):
    """An engine's training and evaluation, driven by the node's one CLI.

    Attributes
    ----------
    models
        The models ``train-model --model`` can produce; the first is the default.
    roi_pattern
        Regular expression (case-insensitive) for the ground-truth ROI or segment names in a
        site's data (``--roi-pattern`` overrides it).
    """

    models: tuple[str, ...]
    roi_pattern: str = ".*"

    def add_train_arguments(self, parser: argparse.ArgumentParser) -> None:  # noqa: B027
        """Add the engine's own ``train-model`` options (optional)."""

    def add_site_arguments(self, parser: argparse.ArgumentParser) -> None:  # noqa: B027
        """Add options that ``--data-dir`` needs for this engine (both commands; optional),
        e.g. ``--labels`` for a classifier whose ground truth is a label per study."""

    def read_site_data(self, data_dir: Path, args: argparse.Namespace) -> Iterable[Any] | None:
        """A site's labelled data read the engine's own way (images plus a labels file for a
        classifier); None (the default): series with RTSTRUCT/SEG ground truth, which the node
        reads into :class:`LabelledVolume` for :meth:`site_cases` / :meth:`evaluate_site`."""
        return None

    @abstractmethod
    def synthetic_cases(self, count: int, first_seed: int, args: argparse.Namespace) -> Iterable[Any]:
        """``count`` synthetic training cases from seed ``first_seed`` on."""

    @abstractmethod
    def site_cases(self, labelled: Iterable[Any]) -> Iterable[Any]:
        """A site's labelled series as training cases."""

    @abstractmethod
    def train(self, cases: Iterable[Any], out_dir: Path, args: argparse.Namespace,
              training_data: str) -> Any:
        """Train ``args.model`` and write its weights and model card into ``out_dir``.

        Returns
        -------
        ai_engines.models.ModelCard
        """

    @abstractmethod
    def evaluate_synthetic(self, engine: Engine, count: int, first_seed: int | None) -> Evaluation:
        """Score ``engine`` on ``count`` held-out synthetic cases (``None``: the engine's
        held-out seeds)."""

    @abstractmethod
    def evaluate_site(self, engine: Engine, labelled: Iterable[Any]) -> Evaluation:
        """Score ``engine`` on a site's labelled series (:class:`LabelledVolume`), or on what
        :meth:`read_site_data` read."""
