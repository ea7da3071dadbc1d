"""The shipped default model and its card agree: every weight file's sha256 and the version."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[2] / "models" / "default"


def _card() -> str:
    return (DEFAULT / "MODEL_CARD.md").read_text()


def test_card_lists_the_sha256_of_every_shipped_weight_file():
    listed = dict(re.findall(r"^\| `([\w.]+\.pt)` \|.*\| `([0-9a-f]{64})` \|$", _card(), re.M))
    shipped = {p.name for p in DEFAULT.glob("*.pt")}
    assert set(listed) == shipped
    for name, digest in listed.items():
        assert hashlib.sha256((DEFAULT / name).read_bytes()).hexdigest() == digest, name


def test_card_title_and_thresholds_match_the_bundle():
    bundle = json.loads((DEFAULT / "bundle.json").read_text())
    card = _card()
    assert card.splitlines()[0] == f"# ductai default model: {bundle['version']}"
    assert f"{bundle['operating_threshold']}**" in card  # the reporting threshold, in bold
    for point in bundle.get("tta_operating_points", {}).values():
        assert str(point["threshold"]) in card
