"""Shipped YAML configs; `config_path()` finds them in the installed package."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def config_path(relative: str) -> Path:
    """Path of a shipped config, e.g. ``config_path("simulation/default.yaml")``."""
    path = CONFIG_DIR / relative
    if not path.is_file():
        available = sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.yaml"))
        raise FileNotFoundError(f"no shipped config {relative!r}; available: {available}")
    return path
