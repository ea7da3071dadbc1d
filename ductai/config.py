"""Config loading: YAML files plus ``key=value`` overrides, validated into pydantic models.

Every error names the file and the dotted key, so a typo in a config is one clear message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or override that cannot be turned into a valid config."""


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(content, dict):
        raise ConfigError(
            f"{path}: expected a mapping at the top level, got {type(content).__name__}"
        )
    return content


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (numbers, lists, booleans)."""
    result = _deep_copy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. epochs=10")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


def validate(model: type[ModelT], content: dict[str, Any], source: str = "config") -> ModelT:
    """Validate a mapping into ``model``; one message lists every bad key with its dotted path."""
    try:
        return model.model_validate(content)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] == "extra_forbidden":
                lines.append(f"  {where}: unknown key")
            else:
                lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{source}: invalid config\n" + "\n".join(lines)) from None


def load_config(
    model: type[ModelT], path: str | Path, overrides: list[str] | None = None
) -> ModelT:
    content = apply_overrides(read_yaml(path), overrides or [])
    return validate(model, content, source=str(path))


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
