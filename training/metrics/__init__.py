"""Validation metrics: segmentation (Dice, clDice, HD95) and lesion detection (FROC, mAP, AUC).

Both metric classes accumulate per-image records; ``state()`` returns them as plain picklable
data so a distributed trainer can gather the states of every rank and ``merge`` them into one
object before ``compute()``, which then equals a single pass over all images.
"""

from ductai.training.metrics.detection import FP_RATES, DetectionMetrics
from ductai.training.metrics.segmentation import SegmentationMetrics

__all__ = ["FP_RATES", "DetectionMetrics", "SegmentationMetrics"]
