"""Every parameter range of the simulated breast, duct tree, findings and mimics.

Ranges are ``[lo, hi]`` lists sampled uniformly (or log-uniformly where a field says so),
probabilities are floats in [0, 1]. The values live in YAML (``configs/simulation/*.yaml``,
section ``anatomy:``); the defaults here only make the model constructible in tests.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def _check_range(value: list[float]) -> list[float]:
    if len(value) != 2:
        raise ValueError(f"a range is [lo, hi], got {len(value)} values")
    if value[0] > value[1]:
        raise ValueError(f"range lo > hi: {value}")
    return value


def _check_positive_range(value: list[float]) -> list[float]:
    _check_range(value)
    if value[0] < 0:
        raise ValueError(f"range must be >= 0: {value}")
    return value


Range = Annotated[list[float], AfterValidator(_check_positive_range)]
SignedRange = Annotated[list[float], AfterValidator(_check_range)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def uniform(rng: np.random.Generator, bounds: list[float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def log_uniform(rng: np.random.Generator, bounds: list[float]) -> float:
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    return float(np.exp(rng.uniform(lo, hi)))


def integer(rng: np.random.Generator, bounds: list[float]) -> int:
    """An integer in [lo, hi], both inclusive."""
    return int(rng.integers(round(bounds[0]), round(bounds[1]) + 1))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BreastConfig(_Section):
    depth_mm: Range = [60.0, 140.0]  # nipple tip to chest wall
    half_width_mm: Range = [50.0, 90.0]
    half_height_mm: Range = [45.0, 80.0]
    size_correlation: Probability = 0.7  # 0: independent axes, 1: one size factor for all
    density_probabilities: dict[str, Probability] = {"a": 0.1, "b": 0.4, "c": 0.4, "d": 0.1}
    glandular_fraction: dict[str, Range] = {
        "a": [0.03, 0.12],
        "b": [0.12, 0.25],
        "c": [0.25, 0.45],
        "d": [0.45, 0.65],
    }
    skin_thickness_mm: Range = [1.0, 2.0]
    nipple_length_mm: Range = [4.0, 12.0]
    nipple_radius_mm: Range = [4.0, 7.0]

    @model_validator(mode="after")
    def _densities(self) -> BreastConfig:
        keys = set(self.density_probabilities)
        if keys != set(self.glandular_fraction) or not keys <= {"a", "b", "c", "d"}:
            raise ValueError("density_probabilities and glandular_fraction need the same a-d keys")
        if sum(self.density_probabilities.values()) <= 0:
            raise ValueError("density_probabilities must not all be 0")
        return self


class DuctConfig(_Section):
    orifice_offset_fraction: Range = [0.05, 0.45]  # of the nipple radius, off the tip centre
    channel_radius_mm: Range = [0.2, 0.4]
    channel_length_mm: Range = [1.0, 5.0]  # beyond the nipple base (it crosses the nipple)
    sinus_radius_mm: Range = [1.0, 2.0]
    sinus_length_mm: Range = [5.0, 12.0]
    ectatic_sinus_probability: Probability = 0.1
    ectatic_sinus_radius_mm: Range = [2.2, 3.5]
    main_radius_mm: Range = [0.5, 1.0]  # main duct 1-2 mm diameter
    dilated_probability: Probability = 0.35  # mildly dilated (not ectatic) main duct
    dilated_main_radius_mm: Range = [0.8, 1.0]  # its radius: still <= 2 mm diameter
    first_branch_mm: Range = [5.0, 20.0]  # from the nipple base (end of the channel)
    max_generation: int = Field(7, ge=1, le=10)
    stop_probability: Probability = 0.06  # a path stops early, per branch of generation >= 3
    child_radius_ratio: Range = [0.65, 0.99]  # of the parent's END radius
    min_radius_difference: float = Field(0.04, ge=0.0, le=0.3)  # the two children differ
    # end / start radius within one branch: gentle, the calibre drops at the bifurcations
    taper: Range = [0.92, 1.0]
    min_radius_mm: float = Field(0.09, gt=0.0)  # terminal ducts ~0.2 mm diameter
    terminal_taper: Range = [0.5, 0.8]  # end / start radius of a terminal duct
    first_length_fraction: Range = [0.2, 0.35]  # generation 1 length / lobe reach
    child_length_ratio: Range = [0.6, 0.9]  # child / parent length
    min_branch_length_mm: float = Field(3.0, gt=0.0)
    branch_angle_deg: Range = [20.0, 70.0]  # between the two children
    segment_length_mm: Range = [2.0, 4.0]  # polyline spacing
    bend_deg: Range = [4.0, 14.0]  # random bending per polyline segment
    steer: Range = [0.15, 0.35]  # pull per segment towards the branch's territory
    lobe_half_angle_deg: Range = [25.0, 45.0]  # a lobe: a quarter to half of the breast
    lobe_reach_fraction: Range = [0.7, 0.95]  # of the nipple-to-chest-wall distance
    attractors: int = Field(500, ge=16)  # space-colonisation points sampled in the lobe
    kill_distance_mm: float = Field(3.0, ge=0.0)  # territory points a branch occupies
    margin_mm: float = Field(2.0, ge=0.0)  # ducts stay this far under the skin
    chest_wall_margin_mm: float = Field(5.0, ge=0.0)
    lobule_probability: Probability = 0.85  # a terminal end shows a lobular (acinar) cluster
    lobule_blobs: Range = [2, 5]
    lobule_radius_mm: Range = [0.15, 0.5]  # acini 0.3-1 mm across
    lobule_concentration: Range = [0.3, 0.7]


class FillConfig(_Section):
    incomplete_probability: Probability = 0.25  # some subtrees not reached by contrast
    unfilled_subtrees: Range = [1, 3]
    unfilled_min_generation: int = Field(2, ge=1)
    fade_probability: Probability = 0.3  # contrast thins out distally
    fade_to: Range = [0.3, 0.8]  # concentration at the most distal ends
    contrast_mg_per_ml: Range = [200.0, 370.0]  # undiluted 240-370 mgI/ml, some diluted


class CannulaConfig(_Section):
    probability: Probability = 0.7
    metal_probability: Probability = 0.6
    radius_mm: Range = [0.15, 0.35]
    insertion_mm: Range = [2.0, 5.0]
    outside_mm: Range = [15.0, 30.0]
    tilt_deg: Range = [0.0, 20.0]
    tubing_probability: Probability = 0.5
    tubing_radius_mm: Range = [0.5, 0.9]
    tubing_length_mm: Range = [20.0, 60.0]


class PapillomaConfig(_Section):
    diameter_mm: Range = [2.0, 10.0]
    diameter_log_uniform: bool = True  # small ones more often
    path_length_mm: Range = [10.0, 40.0]  # most papillomas, along the duct from the orifice
    outlier_probability: Probability = 0.15
    outlier_path_length_mm: Range = [5.0, 70.0]
    max_generation: int = Field(3, ge=0)
    elongation: Range = [1.0, 1.6]  # axial / cross-sectional radius
    lobulated_probability: Probability = 0.35
    lobulation: Range = [0.1, 0.3]  # depth of the clefts between lobules (of the radius)
    rim_mm: Range = [0.1, 0.45]  # contrast rim on the free side of a non-obstructing papilloma
    attached_rim_fraction: Range = [0.0, 0.5]  # rim on the wall it grows from, of rim_mm
    rim_max_duct_fraction: float = Field(0.4, gt=0.0)  # free rim <= this * duct radius
    obstructing_probability: Probability = 0.25


class CutoffConfig(_Section):
    mask_size_mm: Range = [3.0, 5.0]
    min_generation: int = Field(0, ge=0)
    max_generation: int = Field(4, ge=0)
    path_length_mm: Range = [10.0, 70.0]


class IrregularityConfig(_Section):
    length_mm: Range = [5.0, 20.0]
    radius_factor: Range = [0.4, 1.6]  # clip of the calibre factor at each knot
    variation: float = Field(0.4, ge=0.0)  # log-normal spread of the calibre factors
    pitch_mm: Range = [0.4, 1.6]  # irregular intervals between knots of the calibre
    narrowing_probability: Probability = 0.4  # an abrupt narrowing (encasement)
    narrowing_factor: Range = [0.3, 0.55]
    narrowing_length_mm: Range = [0.8, 3.0]
    wobble_fraction: Range = [0.1, 0.35]  # sideways wander of the centreline, of the radius
    notches: Range = [3, 8]  # lucent bites out of the margins
    notch_radius_fraction: Range = [0.3, 0.65]  # of the local lumen radius
    defects: Range = [1, 3]  # small intraluminal filling defects
    defect_radius_fraction: Range = [0.3, 0.6]  # of the local lumen radius
    min_generation: int = Field(1, ge=0)
    max_generation: int = Field(4, ge=0)


class EctasiaConfig(_Section):
    diameter_mm: Range = [2.5, 5.0]  # over the 2 mm top of a normal (even mildly dilated) main duct
    length_mm: Range = [10.0, 40.0]
    max_generation: int = Field(2, ge=0)


class ExtravasationConfig(_Section):
    size_mm: Range = [5.0, 25.0]
    blobs: Range = [12, 30]  # overlapping puffs of an amorphous cloud
    lobulation: Range = [0.3, 0.8]
    concentration: Range = [0.1, 0.4]  # diluted in the tissue: fainter than the column
    max_generation: int = Field(4, ge=0)
    intravasation_probability: Probability = 0.3
    intravasation_lines: Range = [1, 3]
    intravasation_radius_mm: Range = [0.15, 0.35]
    intravasation_length_mm: Range = [15.0, 50.0]
    intravasation_concentration: Range = [0.4, 0.9]  # vessels fill nearly undiluted


class FindingsConfig(_Section):
    count_probabilities: list[Probability] = [0.25, 0.55, 0.15, 0.05]  # 0, 1, 2, 3 lesions
    class_weights: dict[str, float] = {
        "papilloma": 0.4,
        "cutoff": 0.15,
        "irregularity": 0.15,
        "ectasia": 0.15,
        "extravasation": 0.15,
    }
    min_separation_mm: float = Field(5.0, ge=0.0)  # between lesions (plus their sizes)
    papilloma: PapillomaConfig = PapillomaConfig()
    cutoff: CutoffConfig = CutoffConfig()
    irregularity: IrregularityConfig = IrregularityConfig()
    ectasia: EctasiaConfig = EctasiaConfig()
    extravasation: ExtravasationConfig = ExtravasationConfig()

    @model_validator(mode="after")
    def _weights(self) -> FindingsConfig:
        allowed = {"papilloma", "cutoff", "irregularity", "ectasia", "extravasation"}
        if not set(self.class_weights) <= allowed:
            raise ValueError(f"class_weights keys must be among {sorted(allowed)}")
        if any(w < 0 for w in self.class_weights.values()):
            raise ValueError("class_weights must be >= 0")
        if not self.count_probabilities or sum(self.count_probabilities) <= 0:
            raise ValueError("count_probabilities must not all be 0")
        return self


class BubbleConfig(_Section):
    probability: Probability = 0.3
    count: Range = [1, 6]  # bubbles in one row
    radius_fraction: Range = [0.75, 0.95]  # of the lumen radius: shaped by the duct
    max_generation: int = Field(1, ge=0)
    main_duct_probability: Probability = 0.8  # row in generation 0 (sinus, main duct)
    gap_mm: Range = [0.0, 1.5]


class CalcificationConfig(_Section):
    secretory_probability: Probability = 0.15
    secretory_count: Range = [1, 4]
    rod_diameter_mm: Range = [0.5, 1.0]
    rod_length_mm: Range = [3.0, 10.0]
    punctate_probability: Probability = 0.2
    punctate_count: Range = [2, 10]
    punctate_radius_mm: Range = [0.1, 0.4]


class MimicsConfig(_Section):
    bubbles: BubbleConfig = BubbleConfig()
    calcifications: CalcificationConfig = CalcificationConfig()


class AnatomyConfig(_Section):
    """The ``anatomy:`` section of a simulation config."""

    breast: BreastConfig = BreastConfig()
    duct: DuctConfig = DuctConfig()
    fill: FillConfig = FillConfig()
    cannula: CannulaConfig = CannulaConfig()
    findings: FindingsConfig = FindingsConfig()
    mimics: MimicsConfig = MimicsConfig()


def load_anatomy_config(path: str, overrides: list[str] | None = None) -> AnatomyConfig:
    """The ``anatomy:`` section of a simulation YAML, validated (overrides like ``duct.taper=[..]``)."""
    from ductai.config import apply_overrides, read_yaml, validate

    content = read_yaml(path).get("anatomy", {})
    return validate(AnatomyConfig, apply_overrides(content, overrides or []), source=str(path))
