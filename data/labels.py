"""Class names shared by datalists, importers, training and inference."""

from __future__ import annotations

FINDINGS: tuple[str, ...] = ("papilloma", "cutoff", "irregularity", "ectasia", "extravasation")
# Mimics are labelled so detectors can learn them as hard negatives; never reported as lesions.
MIMICS: tuple[str, ...] = ("air_bubble", "calcification")
CLASSES: tuple[str, ...] = FINDINGS + MIMICS

VIEWS: tuple[str, ...] = ("CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "AT", "CV")
# Views whose rows run head-to-feet (lateral family); the rest are cranio-caudal family.
LATERAL_VIEWS: frozenset[str] = frozenset({"MLO", "ML", "LM", "LMO", "SIO", "AT"})
UNKNOWN = "unknown"
