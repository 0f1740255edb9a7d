"""Train (or fine-tune) the CT lung tumour model on arrays; writes weights and a model card.

Cases are HU volumes with tumour masks: synthetic ones from :mod:`ai_engines.ct_lung.synthetic`
or a site's CT series with RTSTRUCT/SEG ground truth, read into arrays by
:mod:`dicom_node.training_data` (this package does no DICOM file I/O).  Every case goes through
the engine's own pre-processing, and the network learns on 2.5-D crops of the 1 mm canvas,
half of them centred near tumour, so a few minutes on one CPU thread suffice for the demo.

Usage::

    dicom-node train-model ct_lung --synthetic 70 --minutes 8 --version 1.0.0+demo --label DEMO \
        --out ai_engines/ct_lung/weights
    dicom-node train-model ct_lung --curated --synthetic 160 --first-seed 4000 --loss small \
        --slice-first 0.5 --warmup-steps 200 --lr 5e-4 --minutes 30 \
        --init-weights ai_engines/ct_lung/weights/ct_lung_unet.pt --out /tmp/step1
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from ai_engines.ct_lung import ARCHITECTURE, EXTENT_MODEL_NAME, MODEL_NAME
from ai_engines.ct_lung.lungs import isolate_lungs
from ai_engines.ct_lung.preprocess import PREPROCESSING_VERSION, preprocess, resample_to_canvas
from ai_engines.ct_lung.synthetic import synthetic_chest_ct
from ai_engines.ct_lung.unet import UNet2D, context_step, dice_ce_loss, stack_context
from ai_engines.models import ModelCard, sha256_of

INTENDED_USE = {
    MODEL_NAME: (
        "Research only: segmentation of solid primary lung tumours (GTV) on axial chest CT, "
        "slice thickness 0.5-5 mm, pixel spacing 0.5-1.0 mm."
    ),
    EXTENT_MODEL_NAME: (
        "Research only: extent of the lung tumours that ct_lung_unet detected on axial chest CT "
        "(slice thickness 0.5-5 mm, pixel spacing 0.5-1.0 mm); never used to detect."
    ),
}
CROP = 128
POSITIVE_FRACTION = 0.4  # crops centred near tumour
HARD_NEGATIVE_FRACTION = 0.35  # crops centred on dense tissue inside the lungs (vessels, hila)
HARD_NEGATIVE_MIN_BIN = 180  # about -300 HU on the 8-bit lung window
BORDER_MM = 16  # hard negatives also on the tissue just outside the lungs (hila, mediastinum, wall)


@dataclass(frozen=True)
class TrainingCase:
    """One CT as arrays: HU ``[slice, row, col]``, tumour mask of the same shape, spacing."""

    hu: np.ndarray
    tumour: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    name: str = ""


def synthetic_training_cases(count: int, first_seed: int = 0) -> Iterator[TrainingCase]:
    """Synthetic slabs (about 8 cm of chest), seeds ``first_seed...``.

    Half are centred on a tumour; the other half lie anywhere from the lung bases to the apices,
    so the network also sees diaphragm domes, heart and apices without tumour.
    """
    for seed in range(first_seed, first_seed + count):
        rng = np.random.default_rng(seed + 7_000_000)
        thickness = float(rng.choice([1.0, 1.5, 2.0, 2.5, 3.0, 5.0]))
        n_slices = int(np.clip(80 / thickness, 16, 48))
        focus = bool(rng.random() < 0.5)
        case = synthetic_chest_ct(
            seed, n_slices=n_slices, slice_thickness=thickness, focus_tumour=focus,
            slab_position=None if focus else float(rng.uniform(0, 1)),
        )
        yield TrainingCase(case.hu, case.tumour, (case.pixel_spacing, case.pixel_spacing), thickness, f"synthetic-{seed}")


def curated_training_cases(
    count: int, first_seed: int = 4000, *, small: float = 0.35, medium: float = 0.25, large: float = 0.15,
    central: float = 0.0,
) -> Iterator[TrainingCase]:
    """Synthetic slabs that over-represent the hard tumours, seeds ``first_seed...``.

    Fractions ``small`` (one 5-14 mm tumour, log-uniform; thin slabs of about 5 cm, since the
    network sees only +-6 mm of context), ``medium`` (14-35 mm) and ``large`` (35-60 mm, mostly
    against the chest wall or the mediastinum: a tumour that large seldom fits elsewhere) are
    slabs centred on their tumour; the rest have no tumour and lie anywhere from the lung bases
    to the apices (diaphragm domes, heart, hila, apices as negatives).  ``central`` (drawn
    after the others) adds slabs with one 14-60 mm tumour against the mediastinum, which the
    network tends to take for mediastinum.
    """
    for seed in range(first_seed, first_seed + count):
        rng = np.random.default_rng(seed + 8_000_000)
        thickness = float(rng.choice([1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0]))
        draw = float(rng.random())
        kind = None
        if draw < small:
            diameter, span = float(np.exp(rng.uniform(np.log(5), np.log(14)))), 50.0
        elif draw < small + medium:
            diameter, span = float(np.exp(rng.uniform(np.log(14), np.log(35)))), 80.0
        elif draw < small + medium + large:
            diameter, span = float(rng.uniform(35, 60)), 100.0
        elif draw < small + medium + large + central:
            diameter, span, kind = float(np.exp(rng.uniform(np.log(14), np.log(60)))), 100.0, "central"
        else:
            diameter, span = None, 80.0
        n_slices = int(np.clip(span / thickness, 16, 48))
        if diameter is None:
            case = synthetic_chest_ct(seed, n_slices=n_slices, slice_thickness=thickness, n_tumours=0,
                                      slab_position=float(rng.uniform(0, 1)))
        else:
            case = synthetic_chest_ct(seed, n_slices=n_slices, slice_thickness=thickness, n_tumours=1,
                                      diameter_mm=diameter, kind=kind, focus_tumour=True)
        yield TrainingCase(case.hu, case.tumour, (case.pixel_spacing, case.pixel_spacing), thickness, f"synthetic-{seed}")


# Slice thicknesses of clinical chest CT: thin (0.625-1.25 mm) and thick (3-5 mm) reconstructions.
CLINICAL_THICKNESSES = (0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0, 5.0)


def clinical_training_cases(
    count: int, first_seed: int = 20_000, *, nodule: float = 0.35, medium: float = 0.2, large: float = 0.1,
    demo: float = 0.25,
) -> Iterator[TrainingCase]:
    """Synthetic slabs with the clinical anatomy (``anatomy_kind="clinical"``), seeds ``first_seed...``.

    Fractions ``nodule`` (one nodule of 0.5-3 ml, i.e. 10-18 mm, drawn uniform in volume, a
    third of them juxtapleural; part-solid in 30 % as the generator draws), ``medium``
    (18-35 mm) and ``large`` (35-60 mm) are slabs centred on their tumour; the rest (35 % by
    default) have no tumour and lie anywhere from the lung bases to the apices, so the network
    sees the azygos, oesophagus, hilar vessels, aorta, heart, domes, dependent density,
    atelectasis, effusions and emphysema as negatives.  Slabs span about 60 mm (at most 48
    slices), slice thickness from :data:`CLINICAL_THICKNESSES`.  A share ``demo`` of the slabs
    keeps the demo anatomy (same recipe otherwise), so fine-tuning does not forget it.
    """
    for seed in range(first_seed, first_seed + count):
        rng = np.random.default_rng(seed + 8_500_000)
        thickness = float(rng.choice(CLINICAL_THICKNESSES))
        n_slices = int(np.clip(60 / thickness, 12, 48))
        anatomy = "demo" if rng.random() < demo else "clinical"
        draw = float(rng.random())
        kind = None
        if draw < nodule:
            diameter = float((6 * rng.uniform(0.5, 3.0) / np.pi) ** (1 / 3) * 10)  # ml -> mm
            kind = "juxtapleural" if rng.random() < 0.33 else None
        elif draw < nodule + medium:
            diameter = float(np.exp(rng.uniform(np.log(18), np.log(35))))
        elif draw < nodule + medium + large:
            diameter = float(rng.uniform(35, 60))
        else:
            diameter = None
        if diameter is None:
            case = synthetic_chest_ct(seed, n_slices=n_slices, slice_thickness=thickness, n_tumours=0,
                                      slab_position=float(rng.uniform(0, 1)), anatomy_kind=anatomy)
        else:
            case = synthetic_chest_ct(seed, n_slices=n_slices, slice_thickness=thickness, n_tumours=1,
                                      diameter_mm=diameter, kind=kind, focus_tumour=True, anatomy_kind=anatomy)
        yield TrainingCase(case.hu, case.tumour, (case.pixel_spacing, case.pixel_spacing), thickness, f"{anatomy}-{seed}")

def _to_canvas(case: TrainingCase) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Canvas, tumour label, hard-negative candidates (dense tissue inside the lungs) and
    hard-negative points just outside the lungs (:func:`_border_points`)."""
    canvas, _mapping = preprocess(case.hu, case.pixel_spacing)

    def mask_to_canvas(mask: np.ndarray) -> np.ndarray:
        values, _ = resample_to_canvas(mask.astype(np.float32) * 1000.0 - 1024.0, case.pixel_spacing)
        return (values + 1024.0) >= 500.0

    label = mask_to_canvas(case.tumour)
    lungs = mask_to_canvas(isolate_lungs(case.hu, case.pixel_spacing, case.slice_spacing).both)
    dense = canvas > HARD_NEGATIVE_MIN_BIN
    hard = lungs & dense & ~label
    return canvas, label, hard, _border_points(canvas, label, lungs)


def _border_points(canvas: np.ndarray, label: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """Points (slice, row, col) on dense tissue within ``BORDER_MM`` outside the lungs, not tumour.

    Hilar vessels and mediastinal or diaphragmatic tissue next to the lung were the demo
    model's false positives; crops centred there teach it that they are not tumour (4 mm grid).
    """
    from scipy import ndimage

    lung = lungs[:, ::4, ::4]
    ring = ndimage.binary_dilation(lung, structure=np.ones((1, 3, 3), bool), iterations=BORDER_MM // 4) & ~lung
    ring &= ~label[:, ::4, ::4] & (canvas[:, ::4, ::4] > HARD_NEGATIVE_MIN_BIN)
    return np.argwhere(ring) * [1, 4, 4]


class _CropSampler:
    """2.5-D crops: tumour-centred, hard negatives (vessels, hilum, wall) and random lung."""

    def __init__(
        self, prepared: list[tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]], context: int,
        rng: np.random.Generator, slice_first: float = 0.0, border_share: float = 0.0,
    ) -> None:
        self.canvases = [p[0] for p in prepared]
        self.labels = [p[1] for p in prepared]
        self.steps = [p[3] for p in prepared]
        self.context, self.rng = context, rng
        self.slice_first = slice_first
        self.tumour_voxels = [np.argwhere(lab) for lab in self.labels]
        # Slices holding tumour, so a crop can pick a slice first: the thin first and last
        # slices of a tumour (and small tumours) are then seen as often as its middle.
        self.tumour_slices = [np.unique(v[:, 0]) for v in self.tumour_voxels]
        # (canvas, label, hard-negative points, context step, border points) per case; see train().
        self.hard_voxels = [p[2] for p in prepared]
        self.border_voxels = [p[4] for p in prepared]
        self.border_share = border_share
        # Lung-ish voxels (below -760 HU), for plain negative crops.
        self.lung_voxels = []
        for canvas in self.canvases:
            pts = np.argwhere(canvas[:, ::8, ::8] < 80) * [1, 8, 8]
            self.lung_voxels.append(pts if len(pts) else np.argwhere(np.ones_like(canvas[:, ::64, ::64])) * [1, 64, 64])

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        half = CROP // 2
        for _ in range(batch):
            i = int(self.rng.integers(len(self.canvases)))
            canvas, label = self.canvases[i], self.labels[i]
            draw = self.rng.random()
            if len(self.tumour_voxels[i]) and draw < POSITIVE_FRACTION:
                voxels = self.tumour_voxels[i]
                if self.rng.random() < self.slice_first:
                    k = self.tumour_slices[i][self.rng.integers(len(self.tumour_slices[i]))]
                    voxels = voxels[voxels[:, 0] == k]
                k, r, c = voxels[self.rng.integers(len(voxels))]
                r, c = r + self.rng.integers(-half + 8, half - 8), c + self.rng.integers(-half + 8, half - 8)
            elif len(self.hard_voxels[i]) and draw < POSITIVE_FRACTION + HARD_NEGATIVE_FRACTION:
                points = self.hard_voxels[i]
                if len(self.border_voxels[i]) and self.rng.random() < self.border_share:
                    points = self.border_voxels[i]
                k, r, c = points[self.rng.integers(len(points))]
                r, c = r + self.rng.integers(-half // 2, half // 2), c + self.rng.integers(-half // 2, half // 2)
            else:
                k, r, c = self.lung_voxels[i][self.rng.integers(len(self.lung_voxels[i]))]
            r0 = int(np.clip(r - half, 0, canvas.shape[1] - CROP))
            c0 = int(np.clip(c - half, 0, canvas.shape[2] - CROP))
            x = stack_context(canvas[:, r0 : r0 + CROP, c0 : c0 + CROP], np.array([k]), self.context, self.steps[i])[0]
            y = label[k, r0 : r0 + CROP, c0 : c0 + CROP]
            if self.rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, ::-1]
            xs.append(x.astype(np.float32) + self.rng.normal(0, 2.0))
            ys.append(y)
        x_t = torch.from_numpy(np.stack(xs)).div_(255.0).contiguous(memory_format=torch.channels_last)
        return x_t, torch.from_numpy(np.ascontiguousarray(np.stack(ys))).long()


def small_object_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, max_weight: float = 4.0) -> torch.Tensor:
    """Cross-entropy with small tumours weighted up, plus batch and per-crop soft Dice.

    The plain batch Dice is dominated by the large tumours in a batch and a 6 mm nodule is a
    few dozen pixels of cross-entropy, so the network learned to ignore small nodules.  Here a
    crop's tumour pixels weigh ``sqrt(300 / area)`` (1...``max_weight``), and the soft Dice of
    each crop holding tumour counts as much as the batch Dice.
    """
    target = target.long()
    fg = target.float()
    area = fg.sum(dim=(1, 2))
    weight = torch.clamp(torch.sqrt(300.0 / area.clamp(min=1.0)), 1.0, max_weight)
    pixel_weight = 1.0 + fg * (weight[:, None, None] - 1.0)
    ce = (F.cross_entropy(logits, target, reduction="none") * pixel_weight).sum() / pixel_weight.sum()
    prob = torch.softmax(logits, dim=1)[:, 1]
    batch_dice = (2 * (prob * fg).sum() + smooth) / (prob.sum() + fg.sum() + smooth)
    loss = ce + 0.5 * (1 - batch_dice)
    has = area > 0
    if bool(has.any()):
        inter = (prob * fg).sum(dim=(1, 2))[has]
        crop_dice = (2 * inter + smooth) / (prob.sum(dim=(1, 2))[has] + area[has] + smooth)
        loss = loss + 0.5 * (1 - crop_dice.mean())
    return loss


def train(
    cases: Iterable[TrainingCase],
    out_dir: Path,
    *,
    minutes: float = 8.0,
    max_steps: int | None = None,
    batch_size: int = 16,
    learning_rate: float = 2e-3,
    seed: int = 0,
    threads: int = 1,
    init_weights: Path | None = None,
    version: str = "1.0.0+demo",
    label: str = "DEMO",
    training_data: str = "synthetic chest CTs (ai_engines.ct_lung.synthetic)",
    progress: bool = True,
    loss: str = "dice_ce",
    slice_first: float = 0.0,
    warmup_steps: int = 0,
    border_share: float = 0.0,
    model_name: str = MODEL_NAME,
) -> ModelCard:
    """Train the tumour network and write ``<out_dir>/<model_name>.pt`` + ``.json``.

    Parameters
    ----------
    cases
        Training cases (arrays); consumed once and pre-processed in memory.
    minutes
        Wall-clock budget of the optimisation (data preparation not included).
    init_weights
        A state_dict to fine-tune from (e.g. the packaged demo weights).
    loss
        ``"dice_ce"`` (batch soft Dice + cross-entropy) or ``"small"``
        (:func:`small_object_loss`: small tumours weighted up, per-crop Dice).
    slice_first
        Fraction of the tumour crops that pick a tumour slice first (then a voxel on it), so
        small tumours and the ends of large ones are seen more often.
    warmup_steps
        Linear learning-rate warm-up (useful when fine-tuning with a new loss).
    border_share
        Share of the hard-negative crops centred on dense tissue just outside the lungs
        (hila, mediastinum, diaphragm, chest wall) instead of inside them.
    model_name
        ``MODEL_NAME`` (the detector) or ``EXTENT_MODEL_NAME`` (the extent model, best trained
        on slabs with large and central tumours: it only delineates what the detector found).

    Returns
    -------
    ModelCard
        The card written beside the weights, with the weights' SHA-256.
    """
    if model_name not in INTENDED_USE:
        raise ValueError(f"unknown model name {model_name!r}; expected one of {sorted(INTENDED_USE)}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    arch = dict(ARCHITECTURE)
    context = int(arch.pop("context"))
    context_mm = float(arch.pop("context_mm"))
    prepared = []
    for case in tqdm(cases, desc="pre-processing", disable=not progress):
        canvas, truth, hard, border = _to_canvas(case)
        # Only the (subsampled) hard-negative points are kept, not the mask: less memory.
        hard_points = np.argwhere(hard[:, ::2, ::2]) * [1, 2, 2]
        prepared.append((canvas, truth, hard_points, context_step(case.slice_spacing, context_mm), border))
    if not prepared:
        raise ValueError("no training cases")
    model = UNet2D(**arch).to(memory_format=torch.channels_last)  # type: ignore[call-overload,arg-type]  # torch's stub lacks memory_format; arch holds the UNet2D keywords
    if init_weights is not None:
        model.load_state_dict(torch.load(init_weights, map_location="cpu", weights_only=True))
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    sampler = _CropSampler(prepared, context, rng, slice_first=slice_first, border_share=border_share)
    loss_fn = small_object_loss if loss == "small" else dice_ce_loss
    model.train()
    start = time.monotonic()
    budget = minutes * 60
    step, running = 0, None
    bar = tqdm(total=max_steps or int(budget), desc="training", unit="step" if max_steps else "s", disable=not progress)
    while True:
        elapsed = time.monotonic() - start
        fraction = step / max_steps if max_steps else elapsed / budget
        if fraction >= 1:
            break
        for group in optimiser.param_groups:  # cosine decay over the budget
            group["lr"] = learning_rate * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * fraction)))
            if step < warmup_steps:
                group["lr"] *= (step + 1) / warmup_steps
        x, y = sampler.sample(batch_size)
        value = loss_fn(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        optimiser.step()
        step += 1
        running = float(value.detach()) if running is None else 0.98 * running + 0.02 * float(value.detach())
        bar.update(1 if max_steps else int(time.monotonic() - start) - bar.n)
        bar.set_postfix(loss=f"{running:.3f}", step=step)
    bar.close()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{model_name}.pt"
    model = model.to(memory_format=torch.contiguous_format)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    card = ModelCard(
        name=model_name,
        version=version,
        sha256=sha256_of(weights),
        intended_use=INTENDED_USE[model_name],
        training_data=f"{training_data}; {len(prepared)} cases; {step} steps of {batch_size} crops",
        preprocessing_version=PREPROCESSING_VERSION,
        architecture=dict(ARCHITECTURE),
        measured_accuracy={},
        research_use_only=True,
        label=label,
        notes=f"trained {_dt.date.today().isoformat()} in {minutes:g} min on {threads} CPU thread(s), seed {seed}",
    )
    card.to_json(out_dir / f"{model_name}.json")
    return card
