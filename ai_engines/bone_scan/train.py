"""Train the bone-scan classifier; writes ``bone_scan_cnn.pt`` and its model card.

Scans go through the engine's own view finding and canvas (:mod:`.views`, :mod:`.preprocess`),
so the network learns exactly what the engine will show it.  The operating threshold is chosen
on a validation set (Youden's J: sensitivity + specificity highest) and stored in the card.
Training-only: the engine never imports this module.

Usage (the demo weights)::

    python -m ai_engines.bone_scan.train --synthetic 2400 --validation 300 --minutes 10 \
        --threads 2 --seed 0 --out ai_engines/bone_scan/weights

Hook for ``dicom-node train-model bone_scan``: :func:`train` takes any iterable of
:class:`~ai_engines.bone_scan.dataset.LabelledScan` (synthetic, or
:func:`~ai_engines.bone_scan.dataset.read_labelled_scans` of a site's folder + CSV).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from ai_engines.bone_scan import MODEL_NAME
from ai_engines.bone_scan.dataset import LabelledScan, synthetic_scans
from ai_engines.bone_scan.network import ARCHITECTURE, BoneScanCNN
from ai_engines.bone_scan.preprocess import CANVAS_SHAPE, PREPROCESSING_VERSION, study_canvas
from ai_engines.bone_scan.spec import GEOMETRY
from ai_engines.bone_scan.views import find_views
from ai_engines.findings import Decline
from ai_engines.models import ModelCard, sha256_of

INTENDED_USE = (
    "Research only: probability of metastatic bone disease on a whole-body planar Tc-99m "
    "diphosphonate bone scan (anterior + posterior views), with a Grad-CAM heat map; an aid "
    "for reading, never a diagnosis."
)
VALIDATION_FIRST_SEED = 200_000  # operating threshold; training seeds lie below 100 000
# Training matrices: mostly 512x128 (cheap to draw; 1024x256 lands on the same canvas).
TRAINING_MATRIX_SHARE_1024 = 0.2


def canvases(scans: Iterable[LabelledScan], progress: bool = False) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """Canvases ``[N, 2, H, W]`` (float16), labels, names and the number of declined scans."""
    xs, ys, names, declined = [], [], [], 0
    for scan in tqdm(scans, desc="canvases", disable=not progress):
        pair = find_views(scan.study, GEOMETRY)
        if isinstance(pair, Decline):
            declined += 1
            continue
        canvas, _ = study_canvas(pair)
        xs.append(canvas.astype(np.float16))
        ys.append(scan.label)
        names.append(scan.name)
    if not xs:
        return np.zeros((0, 2, *CANVAS_SHAPE), np.float16), np.zeros(0, np.float32), names, declined
    return np.stack(xs), np.asarray(ys, np.float32), names, declined


def cached_canvases(cache: Path | None, scans: Iterable[LabelledScan], progress: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`canvases`, kept in ``cache`` (``.npz``) so a second run (e.g. fine-tuning with
    another budget) skips drawing the same seeds again; the cache must match the pre-processing."""
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as data:
            if str(data["preprocessing_version"]) == PREPROCESSING_VERSION:
                return data["x"], data["y"], int(data["declined"])
    x, y, _, declined = canvases(scans, progress)
    if cache is not None:
        np.savez(cache, x=x, y=y, declined=declined, preprocessing_version=PREPROCESSING_VERSION)
    return x, y, declined


def synthetic_training_scans(count: int, first_seed: int = 0) -> Iterable[LabelledScan]:
    """Synthetic scans for training: random layouts, a fifth at 1024x256, the rest 512x128."""
    for seed in range(first_seed, first_seed + count):
        rng = np.random.default_rng(seed + 9_000_000)
        matrix = (1024, 256) if rng.random() < TRAINING_MATRIX_SHARE_1024 else (512, 128)
        yield from synthetic_scans(1, seed, matrix=matrix, transposed=bool(rng.random() < 0.1))


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A mirrored patient, a shifted table and a different count level are still the same scan."""
    if rng.random() < 0.5:
        x = torch.flip(x, dims=(3,))
    shift = int(rng.integers(-8, 9))
    if shift:
        x = torch.roll(x, shifts=shift, dims=2)
    gain = torch.from_numpy(rng.uniform(0.85, 1.15, size=(x.shape[0], 1, 1, 1)).astype(np.float32))
    return x * gain


def youden_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The threshold that maximises sensitivity + specificity (midpoint between scores)."""
    order = np.unique(probabilities)
    if len(order) < 2 or labels.min() == labels.max():
        return 0.5
    candidates = (order[:-1] + order[1:]) / 2
    best, best_j = 0.5, -1.0
    for t in candidates:
        predicted = probabilities >= t
        sens = predicted[labels == 1].mean()
        spec = (~predicted[labels == 0]).mean()
        if sens + spec > best_j:
            best, best_j = float(t), float(sens + spec)
    return best


def predict(model: BoneScanCNN, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities for canvases ``[N, 2, H, W]``."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(x[start : start + batch_size].astype(np.float32))
            out.append(torch.sigmoid(model(batch)).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def train(
    scans: Iterable[LabelledScan],
    out_dir: Path,
    *,
    validation: Iterable[LabelledScan] | None = None,
    cache: Path | None = None,
    minutes: float = 10.0,
    max_steps: int | None = None,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    seed: int = 0,
    threads: int = 2,
    init_weights: Path | None = None,
    version: str = "1.0.0+site",
    label: str = "",
    training_data: str = "",
    progress: bool = True,
) -> ModelCard:
    """Train the classifier and write ``<out_dir>/bone_scan_cnn.pt`` + ``.json``.

    Parameters
    ----------
    scans
        Labelled training scans; declined ones (missing views, not whole body) are skipped.
    validation
        Labelled scans for the operating threshold (Youden's J); None: the threshold is chosen
        on the training scans (optimistic; say so in ``training_data``).
    cache
        ``.npz`` file for the training canvases (validation beside it); reused when present.
    minutes
        Wall-clock budget of the optimisation (canvas preparation not included).
    max_steps
        Stop after this many steps instead (tests).
    init_weights
        A state_dict to fine-tune from (e.g. the packaged demo weights).

    Returns
    -------
    ModelCard
        The card written beside the weights, with the weights' SHA-256 and the threshold.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    started = time.monotonic()
    x, y, declined = cached_canvases(cache, scans, progress)
    if len(x) == 0 or y.min() == y.max():
        raise ValueError(f"training needs scans of both labels; got {len(x)} usable, {declined} declined")
    if validation is not None:
        vx, vy, vdeclined = cached_canvases(
            None if cache is None else Path(cache).with_suffix(".validation.npz"), validation, progress)
    else:
        vx, vy, vdeclined = x, y, 0
    prepared_s = time.monotonic() - started
    model = BoneScanCNN(**ARCHITECTURE)
    if init_weights is not None:
        model.load_state_dict(torch.load(init_weights, map_location="cpu", weights_only=True))
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    positive_weight = torch.tensor(float((y == 0).sum()) / max(float((y == 1).sum()), 1.0))
    model.train()
    start = time.monotonic()
    budget = minutes * 60
    step, running = 0, None
    order = rng.permutation(len(x))
    cursor = 0
    bar = tqdm(total=max_steps or int(budget), desc="training", unit="step" if max_steps else "s", disable=not progress)
    while True:
        fraction = step / max_steps if max_steps else (time.monotonic() - start) / budget
        if fraction >= 1:
            break
        for group in optimiser.param_groups:  # short warm-up, then cosine decay over the budget
            group["lr"] = learning_rate * min(1.0, (step + 1) / 50) * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * fraction)))
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(x)), 0
        index = order[cursor : cursor + batch_size]
        cursor += batch_size
        batch = _augment(torch.from_numpy(x[index].astype(np.float32)), rng)
        target = torch.from_numpy(y[index])
        loss = F.binary_cross_entropy_with_logits(model(batch), target, pos_weight=positive_weight)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.update(1 if max_steps else int(time.monotonic() - start) - bar.n)
        bar.set_postfix(loss=f"{running:.3f}", step=step)
    bar.close()
    trained_s = time.monotonic() - start
    threshold = youden_threshold(vy, predict(model, vx))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{MODEL_NAME}.pt"
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    architecture = dict(ARCHITECTURE, channels=list(ARCHITECTURE["channels"]), canvas_shape=list(CANVAS_SHAPE),
                        operating_threshold=round(threshold, 4))
    card = ModelCard(
        name=MODEL_NAME,
        version=version,
        sha256=sha256_of(weights),
        intended_use=INTENDED_USE,
        training_data=(
            f"{training_data or 'labelled bone scans'}; {len(x)} training scans ({int(y.sum())} metastatic, "
            f"{declined} declined), {step} steps of {batch_size}; operating threshold by Youden's J on "
            f"{len(vx)} {'validation' if validation is not None else 'training'} scans ({vdeclined} declined)"
        ),
        preprocessing_version=PREPROCESSING_VERSION,
        architecture=architecture,
        measured_accuracy={},
        research_use_only=True,
        label=label,
        notes=(
            f"trained {_dt.date.today().isoformat()} on {threads} CPU thread(s), seed {seed}: canvases "
            f"{prepared_s / 60:.1f} min, optimisation {trained_s / 60:.1f} min"
        ),
    )
    card.to_json(out_dir / f"{MODEL_NAME}.json")
    return card


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", type=int, help="number of synthetic training scans (seeds from --first-seed)")
    source.add_argument("--data-dir", type=Path, help="folder of DICOM NM bone scans (with --labels)")
    parser.add_argument("--labels", type=Path, help="CSV study_uid,label or path,label")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--validation", type=int, default=300, help="synthetic validation scans for the threshold")
    parser.add_argument("--out", type=Path, required=True, help="folder for weights + model card")
    parser.add_argument("--cache", type=Path, default=None, help="keep the canvases here (.npz) and reuse them")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-weights", type=Path, default=None)
    parser.add_argument("--version", default="1.0.0+site")
    parser.add_argument("--label", default="")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.synthetic is not None:
        scans: Iterable[LabelledScan] = synthetic_training_scans(args.synthetic, args.first_seed)
        data = (f"synthetic whole-body bone scans (ai_engines.bone_scan.synthetic), seeds "
                f"{args.first_seed}-{args.first_seed + args.synthetic - 1}, half metastatic, a fifth 1024x256")
        validation = synthetic_scans(args.validation, VALIDATION_FIRST_SEED) if args.validation else None
    else:
        from ai_engines.bone_scan.dataset import read_labelled_scans

        if args.labels is None:
            raise SystemExit("--data-dir needs --labels")
        scans = list(read_labelled_scans(args.data_dir, args.labels))
        data = f"site data: {len(scans)} labelled bone scans"
        validation = None
    card = train(
        scans, args.out, validation=validation, cache=args.cache, minutes=args.minutes, max_steps=args.max_steps,
        batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed, threads=args.threads,
        init_weights=args.init_weights, version=args.version, label=args.label, training_data=data,
    )
    print(f"wrote {args.out / (MODEL_NAME + '.pt')} sha256 {card.sha256} threshold {card.architecture['operating_threshold']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
