"""Train the glioma U-Net and its grade head; writes weights and model cards.

Synthetic cases (:mod:`ai_engines.mr_glioma.synthetic`) are 48 mm slabs with the tumour
centred, "acquired" on the 1 mm grid as the engine would see them after resampling: box slice
profile of 1-6.5 mm, sampled and linearly re-interpolated to 1 mm, bias field, Rician noise,
then the engine's own brain mask and z-score (:mod:`ai_engines.mr_glioma.preprocess`).  N4
and registration are skipped for synthetic cases (the bias fields are mild and the sequences
are aligned by construction).  A site's own cases (MR series with SEG/RTSTRUCT labels read to
arrays by the node) go through :func:`case_from_series`, the engine's full pre-processing.

Sequences are dropped at random per crop (zeros and a cleared presence flag) so single-
sequence studies (T1c only, FLAIR only) work.

Usage (the node's one CLI; ``python -m ai_engines.mr_glioma.train`` is the same without it)::

    dicom-node train-model mr_glioma --synthetic 36 --minutes 15 --grade-minutes 3 --out DIR
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
import torch
from scipy import ndimage

from ai_engines.ct_lung.unet import UNet2D
from ai_engines.models import ModelCard, sha256_of
from ai_engines.mr_glioma import GRADE_MODEL_NAME, MODEL_NAME, T1C_MODEL_NAME
from ai_engines.mr_glioma.preprocess import PREPROCESSING_VERSION, brain_mask, prepare, zscore
from ai_engines.mr_glioma.synthetic import KIND_WEIGHTS, SHAPE, bias_field, rician, synthetic_brain
from ai_engines.mr_glioma.unet import (
    INPUT_ROLES,
    GradeHead,
    n_input_channels,
    region_dice_ce_loss,
    stack_inputs,
    tumour_features,
)
from ai_engines.volume import SeriesVolume

CONTEXT, STEP_MM = 1, 3
POOL = 2  # the network sees the 1 mm grid averaged to 2 mm in-plane (CPU budget; see the docs)
ARCHITECTURE = {
    "in_channels": n_input_channels(CONTEXT), "out_channels": 4, "base_channels": 8, "depth": 4,
    "dropout": 0.1, "context": CONTEXT, "context_mm": float(STEP_MM), "pool": POOL,
}
CROP = 128  # mm (64 network pixels)
SLAB = 40
TUMOUR_CROP_FRACTION = 0.6
THICKNESSES = (1.0, 1.5, 3.0, 4.0, 5.0, 6.5)  # mm, simulated slice profiles
INTENDED_USE = (
    "Research only: segmentation of glioma sub-regions (enhancing, necrotic/non-enhancing core, "
    "oedema) on brain MR (any subset of T1, T1c, T2, FLAIR with T1c or FLAIR), 1-7 mm slices."
)
GRADE_INTENDED_USE = (
    "Research only, DEMO: probability that a segmented glioma is high grade (here: enhancing); "
    "a placeholder for a site-trained grade or genomic-subtype classifier."
)


@dataclass
class TrainingCase:
    """Channels (role -> z-scored float32 on the 1 mm grid), labels 0-3, grade label."""

    channels: dict[str, np.ndarray]
    labels: np.ndarray
    high_grade: bool
    name: str = ""


def _simulate_acquisition(image: np.ndarray, rng: np.random.Generator, thickness: float) -> np.ndarray:
    """Box slice profile of ``thickness`` mm sampled and re-interpolated to 1 mm (as the
    engine's resampling does), mild in-plane blur, bias field and Rician noise."""
    n = image.shape[0]
    if thickness > 1.5:
        blurred = ndimage.uniform_filter1d(image, size=int(round(thickness)), axis=0)
        positions = np.arange(rng.uniform(0, thickness), n - 1, thickness)
        samples = blurred[np.rint(positions).astype(int)]
        image = _interp_z(samples, positions, n)
    image = ndimage.gaussian_filter(image, (0, rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6)))
    image = image * bias_field(image.shape, rng, float(rng.uniform(0.0, 0.25)))
    return rician(image.astype(np.float32), float(rng.uniform(0.01, 0.05)), rng)


def _interp_z(samples: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation along axis 0 from ``positions`` to 0..n-1 (clamped at the ends)."""
    target = np.clip(np.arange(n, dtype=np.float64), positions[0], positions[-1])
    upper = np.clip(np.searchsorted(positions, target, side="right"), 1, len(positions) - 1)
    lower = upper - 1
    w = ((target - positions[lower]) / np.maximum(positions[upper] - positions[lower], 1e-6))[:, None, None]
    return (samples[lower] * (1 - w) + samples[upper] * w).astype(np.float32)


def synthetic_case(seed: int) -> TrainingCase:
    """One synthetic training slab (seed ``seed``), pre-processed as the engine does."""
    rng = np.random.default_rng(seed + 5_000_000)
    start = int(rng.integers(40, SHAPE[0] - SLAB - 8))
    brain = synthetic_brain(seed, z_range=(start, start + SLAB))
    thickness = float(rng.choice(THICKNESSES))
    acquired = {role: _simulate_acquisition(brain.images[role], rng, thickness) for role in INPUT_ROLES}
    reference = "T1c" if rng.random() < 0.7 else "FLAIR"
    mask = brain_mask(acquired[reference], keep_pieces=True)  # a slab: skull-base pieces apart
    channels = {role: zscore(values, mask) for role, values in acquired.items()}
    # The engine keeps only tumour inside the brain mask; so does the training target.
    labels = np.where(mask, brain.labels, 0).astype(np.uint8)
    return TrainingCase(channels, labels, bool((brain.labels == 3).any()), f"synthetic-{seed}")


def real_negative_cases(path: Path, count: int, seed: int) -> list[TrainingCase]:
    """``count`` tumour-free slabs of a real T1 head image (NIfTI/NRRD, any orientation):
    hard negatives for the T1c-only network, which on synthetic anatomy alone took real cortex
    and sulci for tumour (brain2).  Each slab is re-oriented to axial LPS, averaged to 1 mm,
    "acquired" like the synthetic slabs (slice profile, bias, noise), masked and z-scored by
    the engine's own functions; its only channel is used as T1c and every label is 0."""
    image = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    factors = [max(1, int(round(1.0 / s))) for s in image.GetSpacing()]
    if any(f > 1 for f in factors):
        image = sitk.BinShrink(image, factors)
    volume = sitk.GetArrayFromImage(image).astype(np.float32)
    volume /= max(float(np.percentile(volume, 99.5)), 1e-6)
    head = np.nonzero(volume.mean(axis=(1, 2)) > 0.1 * volume.mean(axis=(1, 2)).max())[0]
    rng = np.random.default_rng(seed + 6_000_000)
    cases = []
    for n in range(count):
        start = int(rng.integers(int(head[0]) + 20, max(int(head[0]) + 21, int(head[-1]) - SLAB - 10)))
        slab = volume[start : start + SLAB]
        thickness = float(rng.choice(THICKNESSES))
        acquired = _simulate_acquisition(slab * float(rng.uniform(0.85, 1.15)), rng, thickness)
        mask = brain_mask(acquired, keep_pieces=True)
        cases.append(TrainingCase({"T1c": zscore(acquired, mask)}, np.zeros(slab.shape, np.uint8), False,
                                  f"negative-{path.name}-{n}"))
    return cases


def case_from_series(sequences: dict[str, SeriesVolume], labels: np.ndarray, reference_role: str, name: str = "") -> TrainingCase:
    """A site's case: its series (role -> volume) and a label array on the reference series'
    grid (0-3 as the engine's classes), through the engine's full pre-processing."""
    from ai_engines.mr_glioma.preprocess import resample, series_to_image

    prepared = prepare(sequences, reference_role)
    label_image = sitk.GetImageFromArray(labels.astype(np.uint8))
    label_image.CopyInformation(series_to_image(sequences[reference_role]))
    on_grid = sitk.GetArrayFromImage(resample(label_image, prepared.grid, interpolator=sitk.sitkNearestNeighbor))
    return TrainingCase(prepared.channels, np.rint(on_grid).astype(np.uint8), bool((labels == 3).any()), name)


def _drop_sequences(rng: np.random.Generator, fixed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if fixed is not None:  # a model for one input set (the T1c-only network) sees only that set
        return fixed
    draw = rng.random()
    if draw < 0.35:
        return INPUT_ROLES
    if draw < 0.6:
        return ("T1c",)
    if draw < 0.72:
        return ("FLAIR",)
    while True:
        kept = tuple(r for r in INPUT_ROLES if rng.random() < 0.5)
        if "T1c" in kept or "FLAIR" in kept:
            return kept


class CropSampler:
    """2.5-D crops of ``CROP`` mm, tumour-centred or anywhere in the brain, sequences dropped."""

    def __init__(self, cases: list[TrainingCase], rng: np.random.Generator,
                 sequences: tuple[str, ...] | None = None) -> None:
        self.cases, self.rng, self.sequences = cases, rng, sequences
        self.tumour = [np.argwhere(c.labels[:, ::2, ::2] > 0) * [1, 2, 2] for c in cases]
        self.brain = [np.argwhere(c.channels[next(iter(c.channels))][:, ::4, ::4] != 0) * [1, 4, 4] for c in cases]

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        half = CROP // 2
        for _ in range(batch):
            i = int(self.rng.integers(len(self.cases)))
            case = self.cases[i]
            points = self.tumour[i] if len(self.tumour[i]) and self.rng.random() < TUMOUR_CROP_FRACTION else self.brain[i]
            k, r, c = points[self.rng.integers(len(points))]
            r += int(self.rng.integers(-half // 2, half // 2 + 1))
            c += int(self.rng.integers(-half // 2, half // 2 + 1))
            _, rows, cols = case.labels.shape
            r0 = int(np.clip(r - half, 0, rows - CROP))
            c0 = int(np.clip(c - half, 0, cols - CROP))
            box = (slice(r0, r0 + CROP), slice(c0, c0 + CROP))
            kept = {role: case.channels[role] for role in _drop_sequences(self.rng, self.sequences)}
            x = stack_inputs(kept, np.array([k]), CONTEXT, STEP_MM, box, POOL)[0]
            y = case.labels[k, box[0], box[1]][POOL // 2 :: POOL, POOL // 2 :: POOL]
            if self.rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, ::-1]
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.int64))


def new_unet() -> UNet2D:
    """An untrained U-Net of :data:`ARCHITECTURE`."""
    return UNet2D(**{k: v for k, v in ARCHITECTURE.items()  # type: ignore[arg-type]  # the U-Net's int keywords
                     if k not in ("context", "context_mm", "pool")})


def train_segmentation(cases: list[TrainingCase], minutes: float, seed: int, lr: float = 2e-3, batch: int = 16,
                       init_weights: Path | None = None, max_steps: int | None = None,
                       sequences: tuple[str, ...] | None = None) -> tuple[UNet2D, dict]:
    """Train until ``minutes`` pass (or ``max_steps``), from ``init_weights`` (a state_dict)
    when given; returns the model and training figures.  ``sequences``: every crop gets
    exactly these (a single-sequence model); None drops sequences at random."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = new_unet()
    if init_weights is not None:
        model.load_state_dict(torch.load(init_weights, map_location="cpu", weights_only=True))
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sampler = CropSampler(cases, rng, sequences)
    deadline = time.monotonic() + minutes * 60
    start, step, losses = time.monotonic(), 0, []
    model.train()
    while time.monotonic() < deadline and (max_steps is None or step < max_steps):
        fraction = (time.monotonic() - start) / (minutes * 60)
        for group in optimiser.param_groups:
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * min(fraction, 1.0)))
        x, y = sampler.sample(batch)
        loss = region_dice_ce_loss(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 50 == 0:
            print(f"step {step} loss {np.mean(losses[-50:]):.4f} ({time.monotonic() - start:.0f} s)", flush=True)
    model.eval()
    return model, {"steps": step, "batch": batch, "final_loss_mean_last_50": round(float(np.mean(losses[-50:])), 4)}


def train_grade(model: UNet2D, cases: list[TrainingCase], minutes: float, seed: int,
                max_steps: int | None = None) -> tuple[GradeHead, dict]:
    """The grade head on the frozen segmentation encoder (tumour cases only)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tumour_cases = [c for c in cases if c.labels.any()]
    width = int(ARCHITECTURE["base_channels"]) * 2 ** int(ARCHITECTURE["depth"])
    head = GradeHead(width)
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    deadline, steps = time.monotonic() + minutes * 60, 0
    while time.monotonic() < deadline and (max_steps is None or steps < max_steps):
        case = tumour_cases[int(rng.integers(len(tumour_cases)))]
        kept = {role: case.channels[role] for role in _drop_sequences(rng)}
        features, weight = tumour_features(model, kept, case.labels > 0, CONTEXT, STEP_MM, POOL)
        logit = head(features, weight)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.tensor(float(case.high_grade)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        steps += 1
    head.eval()
    return head, {"steps": steps, "cases": len(tumour_cases), "high_grade_fraction": round(float(np.mean([c.high_grade for c in tumour_cases])), 3)}


def synthetic_recipe(count: int, first_seed: int, threads: int, seed: int, model_name: str = MODEL_NAME) -> str:
    """The data recipe of ``count`` synthetic slabs, for the model card."""
    crops = ("T1c only in every crop (the T1c-only network)" if model_name == T1C_MODEL_NAME else
             "sequences dropped per crop (35 % all four, 25 % T1c only, 12 % FLAIR only, else random subsets "
             "with T1c or FLAIR)")
    return (
        f"synthetic brain MR only (ai_engines.mr_glioma.synthetic): {count} slabs of {SLAB} mm, seeds "
        f"{first_seed}-{first_seed + count - 1}, tumour kinds hgg/solid/lgg/none "
        f"{'/'.join(f'{w:g}' for w in KIND_WEIGHTS)}, enhancing T1c excess over white matter x0.35-1, "
        f"slice thickness {'/'.join(f'{t:g}' for t in THICKNESSES)} mm simulated on the 1 mm grid, bias 0-25 %, "
        f"Rician noise 1-5 %; crops {CROP} mm, {int(TUMOUR_CROP_FRACTION * 100)} % tumour-centred; {crops}; "
        f"{threads} CPU thread(s); training seed {seed}"
    )


def train(cases: Iterable[TrainingCase], out_dir: Path, *, model_name: str = MODEL_NAME, minutes: float = 15.0,
          grade_minutes: float = 3.0, max_steps: int | None = None, lr: float = 2e-3, batch: int = 16, seed: int = 1,
          threads: int = 1, init_weights: Path | None = None, encoder_weights: Path | None = None,
          version: str = "0.1.0+demo.1", label: str = "DEMO", training_data: str = "", command: str = "") -> ModelCard:
    """Train and write weights plus model cards into ``out_dir``.

    ``model_name`` :data:`MODEL_NAME`: the U-Net (from ``init_weights`` when given) and then
    the grade head on its encoder (the head is only valid with the encoder it was trained on);
    :data:`T1C_MODEL_NAME`: the U-Net on T1c alone (every crop T1c only; no grade head: the
    engine grades with the all-sequence network's encoder);
    :data:`GRADE_MODEL_NAME`: the grade head only, on the U-Net ``encoder_weights`` (default:
    the installed one).  Returns the card of ``model_name``.
    """
    torch.set_num_threads(threads)
    t0 = time.monotonic()
    cases = list(cases)
    print(f"{len(cases)} cases in {time.monotonic() - t0:.0f} s", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    today = _dt.date.today().isoformat()
    demo = label == "DEMO"
    card = None
    if model_name in (MODEL_NAME, T1C_MODEL_NAME):
        sequences = ("T1c",) if model_name == T1C_MODEL_NAME else None
        model, figures = train_segmentation(cases, minutes, seed, lr=lr, batch=batch, init_weights=init_weights,
                                            max_steps=max_steps, sequences=sequences)
        weights = out_dir / f"{model_name}.pt"
        torch.save(model.state_dict(), weights)
        start = f"fine-tuned from {init_weights.name} (sha256 {sha256_of(init_weights)[:12]})" if init_weights else \
            "from random initialisation"
        card = ModelCard(
            name=model_name, version=version, sha256=sha256_of(weights), intended_use=INTENDED_USE,
            training_data=training_data, preprocessing_version=PREPROCESSING_VERSION,
            architecture=dict(ARCHITECTURE) | ({"sequences": list(sequences)} if sequences else {}),
            measured_accuracy={"training": figures,
                               "note": "held-out figures: dicom-node evaluate-model mr_glioma --synthetic N"},
            label=label,
            notes=(("DEMO weights: synthetic training only, not validated on real MR. " if demo else "")
                   + f"Trained {today} with `{command}`; {start}; {figures['steps']} steps x {figures['batch']} crops, "
                   f"{minutes:g} min, AdamW lr {lr:g} cosine, seed {seed}."),
        )
        card.to_json(out_dir / f"{model_name}.json")
        if sequences:  # the grade head stays on the all-sequence network's encoder
            print(f"wrote {out_dir} in {time.monotonic() - t0:.0f} s", flush=True)
            return card
    else:
        model = new_unet()
        if encoder_weights is not None:
            model.load_state_dict(torch.load(encoder_weights, map_location="cpu", weights_only=True))
        else:
            from ai_engines.models import load_weights, locate_model

            model = load_weights(locate_model("mr_glioma", MODEL_NAME), model)
    model.eval()
    head, grade_figures = train_grade(model, cases, grade_minutes, seed + 1, max_steps=max_steps)
    head_weights = out_dir / f"{GRADE_MODEL_NAME}.pt"
    torch.save(head.state_dict(), head_weights)
    grade_card = ModelCard(
        name=GRADE_MODEL_NAME, version=version, sha256=sha256_of(head_weights), intended_use=GRADE_INTENDED_USE,
        training_data=training_data + f"; grade label = enhancing tumour present (synthetic grade only); {grade_figures}",
        preprocessing_version=PREPROCESSING_VERSION,
        architecture={"in_features": ARCHITECTURE["base_channels"] * 2 ** ARCHITECTURE["depth"], "encoder": MODEL_NAME,
                      "pooling": "mean and max of the deepest encoder features over the predicted tumour"},
        measured_accuracy={"note": "held-out figures: dicom-node evaluate-model mr_glioma --synthetic N"},
        label=label,
        notes=(
            "Evidence behind the approach: the seed CNN predicted lower-grade glioma genomic subtype from MRI with AUC "
            "0.73 (95% CI 0.61-0.84), and transfer learning from glioblastoma MRI beat ImageNet pretraining; hence this "
            "head sits on the segmentation encoder (frozen). "
            + ("This DEMO head is trained on SYNTHETIC grade only (enhancement present = high grade) and carries no "
               "clinical evidence of its own. " if demo else "")
            + f"Trained {today} with `{command}`, {grade_minutes:g} min, seed {seed + 1}."
        ),
    )
    grade_card.to_json(out_dir / f"{GRADE_MODEL_NAME}.json")
    print(f"wrote {out_dir} in {time.monotonic() - t0:.0f} s", flush=True)
    return card if card is not None else grade_card


def main(argv: list[str] | None = None) -> int:
    """``python -m ai_engines.mr_glioma.train``: the same as ``dicom-node train-model mr_glioma``
    (kept for environments without the node installed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=36, help="synthetic training slabs")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--grade-minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)  # 2 threads ran 6x slower on the shared machine
    parser.add_argument("--init-weights", type=Path, default=None)
    parser.add_argument("--version", default="0.1.0+demo.1")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m ai_engines.mr_glioma.train " + " ".join(sys.argv[1:] if argv is None else argv)
    train((synthetic_case(s) for s in range(args.first_seed, args.first_seed + args.cases)), args.out,
          minutes=args.minutes, grade_minutes=args.grade_minutes, seed=args.seed, threads=args.threads,
          init_weights=args.init_weights, version=args.version, command=command,
          training_data=synthetic_recipe(args.cases, args.first_seed, args.threads, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
