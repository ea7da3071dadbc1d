"""The full simulation config: anatomy ranges plus imaging ranges, one YAML per preset."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ductai.config import ConfigError, load_config
from ductai.configs import CONFIG_DIR
from ductai.simulation.anatomy_config import AnatomyConfig
from ductai.simulation.imaging_config import ImagingConfig

PRESET_DIR = CONFIG_DIR / "simulation"


class SimulationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "default"
    description: str = ""
    # Probability that the second view is an MLO rather than a true lateral (ML).
    mlo_probability: float = Field(0.7, ge=0.0, le=1.0)
    anatomy: AnatomyConfig = Field(default_factory=AnatomyConfig)
    imaging: ImagingConfig = Field(default_factory=ImagingConfig)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_simulation_config(preset: str | Path = "default", overrides: list[str] | None = None):
    """A preset name under configs/simulation/ or a YAML path, plus ``key=value`` overrides."""
    path = Path(preset)
    if not path.suffix:
        path = PRESET_DIR / f"{preset}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown simulation preset {preset!r}; known: {preset_names()}")
    return load_config(SimulationConfig, path, overrides)
