"""Train the second-stage candidate classifier (models/rescorer.py) of a bundle.

    ductai train-rescorer --model models/default --out outputs/rescorer \
        --train hard:120:3100,default:130:3101 --select hard:12:900,default:20:901

1. Simulates each PRESET:N:SEED set (N breasts, 2 views each), or reads a datalist split
   (DATALIST.json@SPLIT: a hospital's annotated views), and records the bundle's first-stage
   candidates on it (training/rescorer_sets.py, training/rescorer_data.py), once per set and
   pair of nets: cached under OUT/sets.
2. Trains on the ``--train`` sets' candidates, the last ``val_fraction`` of views held out;
   the epoch kept is the one with the best CPM of the held-out views ranked by the classifier.
3. Chooses ``blend`` (how much the classifier's logit replaces the first stage's,
   inference/rescoring.py) by the mean CPM over the ``--select`` sets, never the test seeds;
   0 when no blend beats the first stage alone (the rescorer is then worth nothing).
4. Writes OUT/rescorer.pt and OUT/report.md (the blend table); ``--into BUNDLE`` also adds
   it to a bundle folder. Params, per-epoch metrics and the checkpoint go to MLflow.

Augmentation: flips along both axes, image contrast and brightness jitter, Gaussian noise on
the image channels; the probability maps are kept as they are (they are the first stage's
output the classifier must read, whatever the image looked like).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import ductai
from ductai.inference.bundle import RESCORER_TASK
from ductai.inference.candidates import FEATURES, clipped_logit
from ductai.inference.rescoring import PATCH_SIZE, SCALES, Rescorer, blend_scores
from ductai.models.checkpoint import save_checkpoint
from ductai.models.rescorer import CandidateClassifier
from ductai.training.rescorer_data import CandidateSet, score_ordering
from ductai.training.rescorer_sets import CandidateSource, record_sets

__all__ = ["BLENDS", "RescorerSettings", "choose_blend", "fit", "train_rescorer"]

log = logging.getLogger(__name__)

BLENDS = (0.25, 0.5, 0.75, 1.0)
IMAGE_CHANNELS = tuple(k * 3 for k in range(len(SCALES)))  # image, lesion, duct per scale


@dataclass
class RescorerSettings:
    # Small and strongly regularised: with 12 epochs at lr 1e-3, weight decay 1e-4, 25 %
    # positives and widths 16-96, the held-out CPM peaked after the first epoch and fell
    # while the loss kept dropping (~1,200 lesion candidates memorised).
    epochs: int = 6
    batch_size: int = 128
    lr: float = 3e-4
    weight_decay: float = 1e-2
    positive_fraction: float = 0.1  # of each batch: lesions are ~8 % of the candidates
    val_fraction: float = 0.15
    seed: int = 0
    num_threads: int = 2
    channels: tuple[int, ...] = (8, 16, 32, 48)


def _augment(patches: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    n = len(patches)
    flip_y = torch.rand(n, generator=rng) < 0.5
    flip_x = torch.rand(n, generator=rng) < 0.5
    patches = torch.where(flip_y[:, None, None, None], patches.flip(-2), patches)
    patches = torch.where(flip_x[:, None, None, None], patches.flip(-1), patches)
    image = patches[:, IMAGE_CHANNELS]
    gain = 0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=rng)
    shift = 0.2 * (torch.rand(n, 1, 1, 1, generator=rng) - 0.5)
    noise = 0.03 * torch.rand(n, 1, 1, 1, generator=rng) * torch.randn(image.shape, generator=rng)
    patches = patches.clone()
    patches[:, IMAGE_CHANNELS] = image * gain + shift + noise
    return patches


def _logits(model: nn.Module, data: CandidateSet, batch: int = 512) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(data), batch):
            p = torch.from_numpy(data.patches[i : i + batch].astype(np.float32))
            f = torch.from_numpy(data.features[i : i + batch])
            out.append(model(p, f, _prior(data.scores[i : i + batch])).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _prior(scores: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(clipped_logit(scores), dtype=torch.float32)


def _split(data: CandidateSet, val_fraction: float) -> tuple[CandidateSet, CandidateSet]:
    n_views = len(data.truths)
    first_val = n_views - max(1, round(n_views * val_fraction))
    parts = []
    for views in (range(0, first_val), range(first_val, n_views)):
        rows = np.isin(data.view, list(views))
        parts.append(
            CandidateSet(
                patches=data.patches[rows],
                features=data.features[rows],
                scores=data.scores[rows],
                labels=data.labels[rows],
                boxes=data.boxes[rows],
                target=data.target[rows],
                view=data.view[rows] - views.start,
                truths=data.truths[views.start : views.stop],
            )
        )
    return parts[0], parts[1]


def fit(train: CandidateSet, val: CandidateSet, settings: RescorerSettings, tracker=None):
    """The classifier with the best held-out CPM, and its per-epoch history."""
    torch.manual_seed(settings.seed)
    rng = torch.Generator().manual_seed(settings.seed)
    model = CandidateClassifier(
        in_channels=train.patches.shape[1],
        n_features=len(FEATURES),
        channels=settings.channels,
    )
    steps_per_epoch = max(1, len(train) // settings.batch_size)
    optim = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        optim, settings.lr, total_steps=settings.epochs * steps_per_epoch
    )
    positives = np.flatnonzero(train.target == 1)
    negatives = np.flatnonzero(train.target == 0)
    if len(positives) == 0 or len(negatives) == 0:
        raise ValueError("the training candidates need both lesions and non-lesions")
    n_pos = max(1, round(settings.batch_size * settings.positive_fraction))
    loss_fn = nn.BCEWithLogitsLoss()
    np_rng = np.random.default_rng(settings.seed)
    best, best_state, history = -1.0, None, []
    for epoch in range(settings.epochs):
        model.train()
        start, losses = time.perf_counter(), []
        for _ in range(steps_per_epoch):
            index = np.concatenate(
                [
                    np_rng.choice(positives, n_pos),
                    np_rng.choice(negatives, settings.batch_size - n_pos),
                ]
            )
            patches = _augment(torch.from_numpy(train.patches[index].astype(np.float32)), rng)
            target = torch.from_numpy(train.target[index].astype(np.float32))
            features = torch.from_numpy(train.features[index])
            loss = loss_fn(model(patches, features, _prior(train.scores[index])), target)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            losses.append(loss.item())
        metrics = score_ordering(val, blend_scores(val.scores, _logits(model, val), 1.0))
        row = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "val_cpm": metrics["cpm"],
            "val_sens_at_1fp": metrics["sens@1fp"],
            "seconds": time.perf_counter() - start,
        }
        history.append(row)
        log.info("rescorer epoch %(epoch)d loss %(loss).4f val CPM %(val_cpm).3f", row)
        if tracker is not None:
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
        if row["val_cpm"] > best:
            best = row["val_cpm"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model.eval(), history


def choose_blend(
    model: nn.Module, select: dict[str, CandidateSet]
) -> tuple[float, list[dict[str, float]]]:
    """The blend with the best mean CPM over the selection sets; 0 (the first stage alone)
    when no blend beats it."""
    logits = {name: _logits(model, data) for name, data in select.items()}
    rows = []
    for blend in (0.0, *BLENDS):
        row = {"blend": blend}
        for name, data in select.items():
            m = score_ordering(data, blend_scores(data.scores, logits[name], blend))
            row[f"{name} cpm"], row[f"{name} mimics"] = m["cpm"], m["mimic_fp_per_image"]
        row["mean cpm"] = float(np.mean([row[f"{n} cpm"] for n in select]))
        rows.append(row)
    # ties go to the smaller blend: the first stage alone unless the classifier adds something
    # (rounded: the same detections give CPMs that differ in the 16th digit)
    best = max(rows, key=lambda r: round(r["mean cpm"], 9))
    return best["blend"], rows


def train_rescorer(
    model: str,
    out: Path,
    train_sets: list[CandidateSource],
    select_sets: list[CandidateSource],
    settings: RescorerSettings | None = None,
    workers: int = 2,
    tracking_uri: str | None = None,
) -> tuple[Path, float]:
    """Steps 1-4 of the module docstring; returns OUT/rescorer.pt and the chosen blend."""
    from ductai.training.tracking import RunTracker, resolve_tracking_uri

    settings = settings or RescorerSettings()
    out = Path(out)
    recorded = record_sets(model, [*train_sets, *select_sets], out / "sets", workers)
    torch.set_num_threads(settings.num_threads)
    train, val = _split(
        CandidateSet.concatenate(recorded[: len(train_sets)]), settings.val_fraction
    )
    select = {s.label: d for s, d in zip(select_sets, recorded[len(train_sets) :])}
    tracker = RunTracker(
        resolve_tracking_uri(tracking_uri, out), "ductai-rescorer", out / "mlartifacts"
    )
    tracker.start("rescorer", {"ductai.task": RESCORER_TASK, "ductai.first_stage": str(model)})
    tracker.log_params(
        {
            **{k: str(v) for k, v in settings.__dict__.items()},
            "train_sets": ",".join(s.name for s in train_sets),
            "select_sets": ",".join(s.name for s in select_sets),
            "train_candidates": str(len(train)),
            "train_lesion_candidates": str(int(train.target.sum())),
        }
    )
    net, history = fit(train, val, settings, tracker)
    blend, table = choose_blend(net, select)
    tracker.log_metrics({"blend": blend}, step=settings.epochs)
    path = save_checkpoint(
        out / "rescorer.pt",
        {
            "model": net.state_dict(),
            "task": RESCORER_TASK,
            "ductai_version": ductai.__version__,
            "config": {
                "model": {
                    "name": "candidate_classifier",
                    "kwargs": {
                        "in_channels": int(train.patches.shape[1]),
                        "n_features": len(FEATURES),
                        "channels": list(settings.channels),
                    },
                },
                "features": list(FEATURES),
                "patch": {"size": PATCH_SIZE, "scales": list(SCALES)},
                "blend": blend,
                "trained_on": {
                    "first_stage": _identity(model),
                    "train_sets": [s.name for s in train_sets],
                    "select_sets": [s.name for s in select_sets],
                    "candidates": len(train),
                    "lesion_candidates": int(train.target.sum()),
                },
                "history": history,
                "blend_table": table,
            },
        },
    )
    Rescorer.load(path)  # what inference will load must load
    (out / "report.md").write_text(_report(history, table, blend))
    tracker.log_artifact(path)
    tracker.flush()
    tracker.end()
    return path, blend


def _identity(model: str) -> str:
    """The first stage's name, version and weights, not the path it was read from."""
    from ductai.inference.bundle import load_bundle

    bundle = load_bundle(model)
    nets = ", ".join(f"{t} {bundle.sha256[f.name][:12]}" for t, f in bundle.files.items())
    return f"{bundle.name} {bundle.version} ({nets})"


def _report(history: list[dict], table: list[dict], blend: float) -> str:
    lines = ["| epoch | loss | held-out CPM | sens@1FP | s |", "|---|---|---|---|---|"]
    lines += [
        f"| {h['epoch']} | {h['loss']:.4f} | {h['val_cpm']:.3f} | {h['val_sens_at_1fp']:.3f} "
        f"| {h['seconds']:.0f} |"
        for h in history
    ]
    keys = [k for k in table[0] if k != "blend"]
    lines += ["", "| blend | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for row in table:
        mark = " (chosen)" if row["blend"] == blend else ""
        cells = " | ".join(f"{row[k]:.3f}" for k in keys)
        lines.append(f"| {row['blend']:g}{mark} | {cells} |")
    return "\n".join(lines) + "\n"
