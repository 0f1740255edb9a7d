"""Model registry: weight files with their model cards, checksummed before use.

Each model is two files side by side: ``<name>.pt`` (a ``state_dict`` or a TorchScript archive)
and ``<name>.json`` (its :class:`ModelCard`).  They are looked up first in the site folder
(``engines.model_dir`` in the node configuration; a file there replaces the packaged one of the
same name) and then in the engine package (``ai_engines/<engine>/weights/``).  Nothing is ever
downloaded.  The SHA-256 of the weight file must equal the card's ``sha256``, otherwise
:class:`ModelIntegrityError` is raised and the engine does not run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_PACKAGE_ROOT = Path(__file__).resolve().parent


class ModelError(RuntimeError):
    """A model cannot be used."""


class ModelNotFound(ModelError):
    """Neither the site folder nor the package holds the model's files."""


class ModelIntegrityError(ModelError):
    """The weight file's SHA-256 differs from its model card: refuse to run."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(f"{path}: SHA-256 {actual} does not match the model card's {expected}")


@dataclass(frozen=True)
class ModelCard:
    """What a model is, what it was trained on and how well it measured.

    ``research_use_only`` stays True unless the site validated the model; it is copied into
    every result's algorithm identification.
    """

    name: str
    version: str
    sha256: str
    intended_use: str
    training_data: str
    preprocessing_version: str
    architecture: dict[str, Any] = field(default_factory=dict)
    measured_accuracy: dict[str, Any] = field(default_factory=dict)
    weights_format: str = "state_dict"  # or "torchscript"
    research_use_only: bool = True
    label: str = ""  # e.g. "DEMO"
    notes: str = ""

    @classmethod
    def from_json(cls, path: Path) -> ModelCard:
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"{path}: unknown model card field(s) {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ModelError(f"{path}: incomplete model card: {exc}") from exc

    def require_preprocessing(self, version: str) -> None:
        """Refuse weights trained on inputs prepared otherwise than the engine prepares them.

        Raises
        ------
        ModelError
            When the card's ``preprocessing_version`` is not ``version``.
        """
        if self.preprocessing_version != version:
            raise ModelError(f"{self.name} {self.version} was trained with pre-processing "
                             f"{self.preprocessing_version}; this engine implements {version}")

    def to_json(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class ModelFiles:
    """Where a model's weight file and card were found."""

    weights: Path
    card_path: Path
    card: ModelCard
    source: str  # "site" or "package"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_weights_dir(engine: str) -> Path:
    """The folder holding an engine's packaged weights, ``ai_engines/<engine>/weights``."""
    return _PACKAGE_ROOT / engine / "weights"


def locate_model(engine: str, model_name: str, model_dir: Path | None = None, packaged: bool = True) -> ModelFiles:
    """Find a model's weight file and card, site folder first.

    ``packaged=False`` looks in ``model_dir`` only: for a model that must come from the same
    folder as another one (a site's detector is not paired with the packaged demo helper).

    Raises
    ------
    ModelNotFound
        Neither location holds both ``<model_name>.pt`` and ``<model_name>.json``.
    """
    searched = []
    for folder, source in ((model_dir, "site"), (packaged_weights_dir(engine) if packaged else None, "package")):
        if folder is None:
            continue
        folder = Path(folder)
        weights, card_path = folder / f"{model_name}.pt", folder / f"{model_name}.json"
        searched.append(str(folder))
        if weights.is_file() and card_path.is_file():
            return ModelFiles(weights, card_path, ModelCard.from_json(card_path), source)
    raise ModelNotFound(f"model {model_name!r} not found in {', '.join(searched)}")


def verify(files: ModelFiles) -> None:
    """Check the weight file against its card's SHA-256.

    Raises
    ------
    ModelIntegrityError
        On any mismatch (also when the card carries no checksum).
    """
    actual = sha256_of(files.weights)
    if actual != files.card.sha256.lower():
        raise ModelIntegrityError(files.weights, files.card.sha256, actual)


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; explicit names pass through."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ModelError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def load_weights(files: ModelFiles, module: Any | None, device: str = "cpu") -> Any:
    """Verify and load a model onto ``device`` in evaluation mode.

    Parameters
    ----------
    files
        From :func:`locate_model`.
    module
        A ``torch.nn.Module`` to receive a ``state_dict``; ignored for TorchScript.

    Returns
    -------
    torch.nn.Module
    """
    import torch

    verify(files)
    if files.card.weights_format == "torchscript":
        model = torch.jit.load(str(files.weights), map_location=device)
    elif files.card.weights_format == "state_dict":
        if module is None:
            raise ModelError(f"{files.card.name}: a module is needed to load a state_dict")
        state = torch.load(files.weights, map_location=device, weights_only=True)
        module.load_state_dict(state)
        model = module.to(device)
    else:
        raise ModelError(f"{files.card.name}: unknown weights format {files.card.weights_format!r}")
    model.eval()
    return model


def list_models(model_dir: Path | None = None) -> list[ModelFiles]:
    """Every model the installation can see: packaged ones, with site files replacing them."""
    found: dict[str, ModelFiles] = {}
    for card_path in sorted(_PACKAGE_ROOT.glob("*/weights/*.json")):
        engine = card_path.parent.parent.name
        try:
            found[card_path.stem] = locate_model(engine, card_path.stem, model_dir)
        except ModelError:
            continue
    if model_dir is not None and Path(model_dir).is_dir():
        for card_path in sorted(Path(model_dir).glob("*.json")):
            weights = card_path.with_suffix(".pt")
            if card_path.stem not in found and weights.is_file():
                found[card_path.stem] = ModelFiles(weights, card_path, ModelCard.from_json(card_path), "site")
    return list(found.values())
