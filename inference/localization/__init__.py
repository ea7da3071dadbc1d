"""Localization for surgical planning, in canonical space (docs/inference-design.md).

* ``localize_view(pred)`` -> ``ViewParts`` (``.localization`` is the contract's
  ``ViewLocalization``; ``.landmarks`` and ``.graph`` are kept for overlays);
  ``localize_arrays(image, duct_prob, detections, spacing_mm, view)`` does the same on arrays.
* ``localize_study([(pred, localization), ...])`` -> ``StudyLocalization`` of one breast:
  lesions matched across CC and ML/MLO with clock, quadrant and depth third.

Modules: ``nipple`` (breast mask, nipple, orifice, nipple axis), ``duct_graph`` (skeleton
graph rooted at the orifice), ``measures`` (per-lesion distances, path, side), ``fill``
(fill flags), ``view``, ``study`` (matching, clock with the MLO correction).
"""

from ductai.inference.localization.study import StudyLocalization, localize_study
from ductai.inference.localization.view import ViewParts, localize_arrays, localize_view

__all__ = ["StudyLocalization", "ViewParts", "localize_arrays", "localize_study", "localize_view"]
