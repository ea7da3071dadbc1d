"""Ground-truth geometry: clock positions, quadrants, depth thirds, path lengths."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ductai.simulation import truth
from ductai.simulation.scene import Branch, Breast


def _breast(depth=90.0) -> Breast:
    return Breast("R", depth, 70.0, 60.0, 0.2, "b", 1.5, 8.0, 5.0)


def _at(hours: float, radius: float = 30.0, laterality: str = "R", x: float = 40.0):
    """A point at a clock angle: builds it from the convention, independent of the code."""
    angle = hours / 12 * 2 * math.pi
    towards_three = radius * math.sin(angle)
    z = radius * math.cos(angle)
    y = towards_three if laterality == "R" else -towards_three
    return np.array([x, y, z])


@pytest.mark.parametrize(
    ("point", "laterality", "expected"),
    [
        ((30, 0, 10), "R", "12:00"),
        ((30, 0, 10), "L", "12:00"),
        ((30, 0, -10), "R", "6:00"),
        ((30, 10, 0), "R", "3:00"),  # medial of the right breast faces the patient's left
        ((30, 10, 0), "L", "9:00"),  # medial of the left breast faces the patient's right
        ((30, -10, 0), "R", "9:00"),
        ((30, -10, 0), "L", "3:00"),
        ((30, -7.07, 7.07), "R", "10:30"),  # upper outer, right
        ((30, -7.07, 7.07), "L", "1:30"),  # upper outer, left
        ((30, 7.07, -7.07), "L", "7:30"),  # lower inner, left
    ],
)
def test_clock_position_known_points(point, laterality, expected):
    assert truth.clock_position(np.array(point, float), laterality) == expected


def test_clock_rounds_to_the_nearest_half_hour():
    assert truth.clock_position(_at(0.2), "R") == "12:00"
    assert truth.clock_position(_at(0.3), "R") == "12:30"
    assert truth.clock_position(_at(11.8), "R") == "12:00"
    assert truth.clock_position(_at(11.7), "R") == "11:30"
    assert truth.clock_position(_at(4.74, laterality="L"), "L") == "4:30"
    assert truth.clock_position(_at(4.76, laterality="L"), "L") == "5:00"
    for h in np.arange(0.0, 12.0, 0.5):
        for lat in "LR":
            label = truth.clock_position(_at(h, laterality=lat), lat)
            hour, minute = (int(v) for v in label.split(":"))
            assert (hour % 12) + minute / 60 == pytest.approx(h)


def test_clock_rejects_unknown_laterality():
    with pytest.raises(ValueError):
        truth.clock_position(np.array([1.0, 1.0, 1.0]), "B")


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_quadrant(laterality):
    assert truth.quadrant(np.array([30, 20, 20.0]), laterality) == "UIQ"
    assert truth.quadrant(np.array([30, -20, 20.0]), laterality) == "UOQ"
    assert truth.quadrant(np.array([30, -20, -20.0]), laterality) == "LOQ"
    assert truth.quadrant(np.array([30, 20, -20.0]), laterality) == "LIQ"
    assert truth.quadrant(np.array([30, 10, 10.0]), laterality) == "central"  # 14.1 mm
    assert truth.quadrant(np.array([30, 0, 14.9]), laterality) == "central"
    assert truth.quadrant(np.array([30, 0, -15.1]), laterality) != "central"


def test_quadrant_agrees_with_the_clock():
    # Right breast: 12-3 upper inner, 3-6 lower inner, 6-9 lower outer, 9-12 upper outer.
    # Left breast: mirrored (3:00 is lateral there).
    expected = {"R": ["UIQ", "LIQ", "LOQ", "UOQ"], "L": ["UOQ", "LOQ", "LIQ", "UIQ"]}
    for lat in "LR":
        for h in np.arange(0.25, 12.0, 0.5):
            p = _at(h, radius=40.0, laterality=lat)
            assert truth.quadrant(p, lat) == expected[lat][int(h // 3)], (lat, h)


def test_depth_third():
    breast = _breast(depth=90.0)
    assert truth.depth_third(np.array([10.0, 0, 0]), breast) == "anterior"
    assert truth.depth_third(np.array([29.9, 0, 0]), breast) == "anterior"
    assert truth.depth_third(np.array([45.0, 0, 0]), breast) == "middle"
    assert truth.depth_third(np.array([61.0, 0, 0]), breast) == "posterior"


def test_distance_to_nipple():
    assert truth.distance_to_nipple(np.array([3.0, 4.0, 0.0])) == pytest.approx(5.0)


def _hand_made_tree() -> list[Branch]:
    """Orifice -> 10 mm main duct -> two children; the first is cut in two (single child)."""
    main = Branch(0, -1, 0, np.array([[0, 0, 0], [10, 0, 0.0]]), np.array([1.0, 0.8]), True, 0.0)
    left = Branch(
        1, 0, 1, np.array([[10, 0, 0], [10, 10, 0], [20, 10, 0.0]]), np.full(3, 0.5), True, 10.0
    )
    right = Branch(2, 0, 1, np.array([[10, 0, 0], [10, -5, 0.0]]), np.full(2, 0.4), True, 10.0)
    distal = Branch(3, 1, 1, np.array([[20, 10, 0], [30, 10, 0.0]]), np.full(2, 0.3), False, 30.0)
    tip = Branch(4, 3, 2, np.array([[30, 10, 0], [35, 15, 0.0]]), np.full(2, 0.2), False, 40.0)
    tip2 = Branch(5, 3, 2, np.array([[30, 10, 0], [35, 5, 0.0]]), np.full(2, 0.2), False, 40.0)
    main.children = [1, 2]
    left.children = [3]
    distal.children = [4, 5]
    return [main, left, right, distal, tip, tip2]


def test_path_length_along_a_hand_made_tree():
    tree = _hand_made_tree()
    assert truth.path_length(tree, 0, np.array([4.0, 1.0, 0.0])) == pytest.approx(4.0)
    assert truth.path_length(tree, 1, np.array([15.0, 10.0, 1.0])) == pytest.approx(25.0)
    assert truth.path_length(tree, 2, np.array([10.0, -5.0, 0.0])) == pytest.approx(15.0)
    assert truth.path_length(tree, 3, np.array([25.0, 10.0, 0.0])) == pytest.approx(35.0)
    # nearest branch: the point lies beside the second segment of branch 1
    assert truth.duct_path_length(tree, np.array([12.0, 10.5, 0.0])) == pytest.approx(22.0)
    # straight line vs path: the duct path is longer than the distance to the nipple
    p = np.array([20.0, 10.0, 0.0])
    assert truth.duct_path_length(tree, p) == pytest.approx(30.0)
    assert truth.distance_to_nipple(p) == pytest.approx(math.hypot(20, 10))


def test_branch_generation_counts_bifurcations_only():
    tree = _hand_made_tree()
    assert [truth.branch_generation(tree, i) for i in range(6)] == [0, 1, 1, 1, 2, 2]
    assert truth.nearest_branch(tree, np.array([33.0, 13.0, 0.0]))[0] == 4
    assert truth.nearest_branch(tree, np.array([5.0, 0.0, 0.0]), filled_only=True)[0] == 0


def test_breast_contains():
    breast = _breast(depth=90.0)
    assert breast.contains(np.array([[0.5, 0, 0], [45, 0, 0], [80, 40, 0]])).all()
    outside = np.array([[-1.0, 0, 0], [91, 0, 0], [2, 6, 0], [60, 0, 70]])
    assert not breast.contains(outside).any()
    assert not breast.contains(np.array([[45, 69.5, 0]]), margin=2.0).any()
