"""TrainConfig: the shipped configs validate; bad keys, values and datalists are one clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ductai.cli import main
from ductai.config import ConfigError
from ductai.training.config import load_train_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*/*.yaml"))
TRAIN_CONFIGS = [p for p in CONFIGS if p.parent.name in ("segmentation", "detection")]


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_validate(path):
    config = load_train_config(path)
    assert config.task == path.parent.name
    # The resolved config round-trips (it is what the checkpoint and the run store).
    from ductai.training.config import config_from_dict

    assert config_from_dict(config.resolved()) == config


def test_small_and_full_configs_exist():
    names = {f"{p.parent.name}/{p.name}" for p in TRAIN_CONFIGS}
    for task in ("segmentation", "detection"):
        assert {f"{task}/small_cpu.yaml", f"{task}/full_gpu.yaml"} <= names


def test_detector_spacing_follows_the_data():
    cfg = load_train_config(ROOT / "configs/detection/small_cpu.yaml", ["data.spacing_mm=0.5"])
    assert cfg.model.kwargs["spacing_mm"] == 0.5
    with pytest.raises(ConfigError, match="spacing_mm"):
        load_train_config(
            ROOT / "configs/detection/small_cpu.yaml", ["model.kwargs.spacing_mm=0.2"]
        )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.epochz=3", "trainer.epochz: unknown key"),
        ("trainer.epochs=many", "trainer.epochs: Input should be a valid integer"),
        ("optim.name=adagrad", "optim.name"),
        ("model.name=resnet_unet", "model.name 'resnet_unet' is not a segmentation model"),
        ("data.source=datalist", "data.datalist (a path) is not set"),
        ("loss.cldice_weight=-1", "loss.cldice_weight"),
    ],
)
def test_bad_values_name_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_train_config(ROOT / "configs/segmentation/small_cpu.yaml", [override])
    assert expected in str(err.value)


def test_shipped_configs_mix_both_presets():
    for path in TRAIN_CONFIGS:
        presets = load_train_config(path).data.simulation.presets
        assert set(presets) == {"default", "hard"}, path


def test_preset_shorthand_and_mix():
    path = ROOT / "configs/segmentation/small_cpu.yaml"
    one = load_train_config(path, ["data.simulation.presets={hard: 1}"])
    assert one.data.simulation.presets == {"hard": 1.0}
    # The old single-preset form (configs, checkpoints written before the mix) still loads.
    content = one.resolved()
    content["data"]["simulation"] = {"preset": "hard", "val_length": 4}
    from ductai.training.config import config_from_dict

    assert config_from_dict(content).data.simulation.presets == {"hard": 1.0}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.simulation.presets={default: 0.7, hrad: 0.3}", "'hrad': unknown preset"),
        ("data.simulation.presets={default: 0.7, hard: 0}", "'hard': the weight must be a posi"),
        ("data.simulation.presets={default: -1}", "'default': the weight must be a posi"),
        ("data.simulation.presets={default: many}", "data.simulation.presets.default"),
        ("data.simulation.presets={}", "give at least one preset"),
        ("data.simulation.presets={x.yaml: 1}", "'x.yaml': no such simulation config file"),
        ("data.simulation.preset=hard", "give either preset (one) or presets (a mix)"),
        (
            "data.simulation.train_overrides=[anatomy.findings.nope=1]",
            "train_overrides do not apply to preset 'default': anatomy.findings.nope: unknown key",
        ),
    ],
)
def test_bad_preset_mixes_are_one_clear_error(override, expected):
    with pytest.raises(ConfigError) as err:
        load_train_config(ROOT / "configs/segmentation/small_cpu.yaml", [override])
    message = str(err.value)
    assert expected in message and "data.simulation" in message
    assert len(message.splitlines()) == 2  # the file, then one line naming the key


def test_cli_reports_one_clear_line(tmp_path, capsys):
    code = main(["train", str(ROOT / "configs/segmentation/small_cpu.yaml"), "trainer.lr=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "trainer.lr: unknown key" in err
    assert "Traceback" not in err


def test_cli_missing_config(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_bad_datalist_is_reported(tmp_path, capsys):
    datalist = tmp_path / "datalist.json"
    entry = {
        "image": "images/missing.dcm",
        "patient_id": "P1",
        "boxes": [[5, 5, 1, 1]],
        "labels": ["papilloma"],
    }
    datalist.write_text(json.dumps({"training": [entry], "validation": [entry]}))
    code = main(
        [
            "train",
            str(ROOT / "configs/segmentation/small_cpu.yaml"),
            "data.source=datalist",
            f"data.datalist={datalist}",
            f"output_dir={tmp_path / 'out'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert str(datalist) in err and "missing.dcm" in err
    assert "Traceback" not in err


def test_existing_output_dir_needs_resume(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "last.pt").write_bytes(b"")
    code = main(["train", str(ROOT / "configs/segmentation/small_cpu.yaml"), f"output_dir={out}"])
    assert code == 2
    assert "--resume auto" in capsys.readouterr().err
