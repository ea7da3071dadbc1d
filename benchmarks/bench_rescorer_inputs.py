"""What does the second-stage rescorer learn from: its patches, its features, or neither?

    .venv/bin/python benchmarks/bench_rescorer_inputs.py [--model models/default]
        [--train hard:150:3200,default:150:3201,hard:150:3202,default:150:3203]
        [--out outputs/rescorer] [--epochs 6]

Records the first stage's candidates of the ``--train`` sets once (training/rescorer_sets.py;
the cache is ``ductai train-rescorer``'s, so ``--out`` may be a folder it already filled),
holds out the last 15 % of views as ``ductai train-rescorer`` does, and trains the classifier
(training/rescorer_train.py ``fit``, its default settings) three times: on patches and
features (what ships), on features alone (blank patches) and on patches alone (zeroed
features). Prints the held-out FROC CPM after every epoch beside the first stage's own
ranking: an input that helps lifts its row above the first stage's, one that overfits
starts near it and falls while the training loss keeps dropping.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ductai.training.rescorer_data import CandidateSet, score_ordering
from ductai.training.rescorer_sets import parse_sets, record_sets
from ductai.training.rescorer_train import RescorerSettings, _split, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table

DEFAULT_TRAIN = "hard:150:3200,default:150:3201,hard:150:3202,default:150:3203"


def _without(data: CandidateSet, patches: bool = True, features: bool = True) -> CandidateSet:
    """A copy whose patches (8x8 blanks: the encoder's output is then constant) or features
    are zeroed."""
    return replace(
        data,
        patches=data.patches if patches else np.zeros_like(data.patches[:, :, :8, :8]),
        features=data.features if features else np.zeros_like(data.features),
    )


VARIANTS = {
    "patches + features (shipped)": {},
    "features only": {"patches": False},
    "patches only": {"features": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--train", default=DEFAULT_TRAIN)
    parser.add_argument("--out", default="outputs/rescorer")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    sets = record_sets(args.model, parse_sets(args.train), Path(args.out) / "sets", args.workers)
    train, val = _split(CandidateSet.concatenate(sets), RescorerSettings.val_fraction)
    first = score_ordering(val, val.scores)
    settings = RescorerSettings(epochs=args.epochs, num_threads=torch.get_num_threads())
    header = ["inputs", *(f"epoch {e + 1}" for e in range(args.epochs)), "last loss"]
    rows = [["first stage alone", *[first["cpm"]] * args.epochs, "-"]]
    for name, drop in VARIANTS.items():
        _, history = fit(_without(train, **drop), _without(val, **drop), settings)
        rows.append([name, *(h["val_cpm"] for h in history), history[-1]["loss"]])
    print_table(
        f"Held-out CPM of the rescorer by epoch ({len(train.truths)} training views, "
        f"{int(train.target.sum())} of {len(train)} candidates on a lesion; "
        f"{len(val.truths)} held-out views)",
        header,
        rows,
    )


if __name__ == "__main__":
    main()
