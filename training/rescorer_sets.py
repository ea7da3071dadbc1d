"""Where the rescorer's candidates come from: simulated sets or datalist splits, recorded once.

A set is ``PRESET:BREASTS:SEED`` (simulated by ``ductai simulate``'s generator into
``OUT/<preset>-<breasts>-<seed>``) or ``DATALIST.json@SPLIT`` (a hospital's annotated views).
``record_sets`` records the first stage's candidates of each (training/rescorer_data.py),
one worker process per set, and caches them per set and pair of nets in
``OUT/<name>-<key>.npz``: a new first stage records anew, the rescorer plays no part.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ductai.data.datalist import resolve_split
from ductai.training.rescorer_data import CandidateSet

__all__ = ["CandidateSource", "parse_sets", "record_sets"]


@dataclass(frozen=True)
class CandidateSource:
    """Views to record candidates on: simulated (``preset``, ``breasts``, ``seed``) or the
    ``split`` of a datalist (a hospital's annotated views, docs/data.md)."""

    preset: str | None = None
    breasts: int = 0
    seed: int = 0
    datalist: Path | None = None
    split: str = "training"

    @property
    def name(self) -> str:
        if self.datalist is None:
            return f"{self.preset}-{self.breasts}-{self.seed}"
        return f"{self.datalist.stem}-{self.split}"

    @property
    def label(self) -> str:
        if self.datalist is None:
            return f"{self.preset} {self.seed}"
        return f"{self.datalist.name} {self.split}"

    def entries(self, out: Path) -> list:
        """The views (datalist entries), simulating them into ``out / name`` when needed."""
        from ductai.training.evaluate_inference import _datalist_entries, _simulated_entries

        if self.datalist is None:
            return _simulated_entries(out / self.name, self.preset, self.breasts, self.seed, 1)
        return _datalist_entries(self.datalist, self.split)

    def fingerprint(self) -> str:
        """What the recorded candidates depend on besides the nets."""
        if self.datalist is None:
            return self.name
        return hashlib.sha256(self.datalist.read_bytes()).hexdigest()[:10]


def parse_sets(text: str) -> list[CandidateSource]:
    """``hard:120:3100,my_views.json@validation`` -> sources: PRESET:BREASTS:SEED simulated
    sets, or DATALIST.json[@SPLIT] (training, validation or test; training by default)."""
    sets = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        path, _, split = item.partition("@")
        if path.endswith(".json"):
            if not Path(path).is_file():
                raise ValueError(f"set {item!r}: datalist {path} not found")
            try:
                split = resolve_split(split or "training")
            except ValueError as e:
                raise ValueError(f"set {item!r}: {e}") from None
            sets.append(CandidateSource(datalist=Path(path), split=split))
            continue
        parts = item.split(":")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].lstrip("-").isdigit():
            raise ValueError(
                f"set {item!r}: expected PRESET:BREASTS:SEED (e.g. hard:120:3100) or "
                "DATALIST.json@SPLIT"
            )
        sets.append(CandidateSource(parts[0], int(parts[1]), int(parts[2])))
    if not sets:
        raise ValueError(f"no sets in {text!r}")
    return sets


def _record(model: str, source: CandidateSource, out: Path) -> Path:
    """One set's candidates, recorded once (a worker process, one thread)."""
    from ductai.inference.bundle import load_bundle
    from ductai.inference.predictor import Predictor, PredictorOptions
    from ductai.training.evaluate_inference import SCORING_THRESHOLD
    from ductai.training.rescorer_data import record_candidates

    bundle = load_bundle(model)
    # candidates depend on the nets and the views: a cache per both (the rescorer plays no part)
    key = "".join(bundle.sha256[f.name] for f in bundle.files.values()) + source.fingerprint()
    path = out / f"{source.name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.npz"
    if not path.is_file():
        options = PredictorOptions(score_threshold=SCORING_THRESHOLD, num_threads=1, rescore=False)
        record_candidates(Predictor(bundle, options), source.entries(out)).save(path)
    return path


def record_sets(model: str, sets: list[CandidateSource], out: Path, workers: int) -> list:
    out.mkdir(parents=True, exist_ok=True)
    if workers <= 1 or len(sets) == 1:
        paths = [_record(model, source, out) for source in sets]
    else:
        with ProcessPoolExecutor(min(workers, len(sets))) as pool:
            paths = list(pool.map(_record, [model] * len(sets), sets, [out] * len(sets)))
    return [CandidateSet.load(p) for p in paths]
