"""Model registry: ``create_model(name, **kwargs)`` builds a network by name (timm style).

Configs name a model and override its defaults; a key the network does not take is one clear
error naming it and the keys it does take, not a deep ``TypeError``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

TASKS = ("segmentation", "detection")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str
    factory: Callable[..., nn.Module]
    # The class whose constructor takes the kwargs: used to name a wrong key clearly.
    target: Callable[..., object]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, task: str, target: Callable[..., object] | None = None):
    """Decorator registering ``factory(**kwargs) -> nn.Module`` under ``name``.

    ``target`` is the constructor the kwargs end up in (defaults to the factory itself).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, task, factory, target or factory)
        return factory

    return decorate


def available_models(task: str | None = None) -> list[str]:
    """Registered model names, optionally only those of one task, sorted."""
    _ensure_builtin_models()
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    return sorted(n for n, e in _REGISTRY.items() if task is None or e.task == task)


def model_task(name: str) -> str:
    """The task ('segmentation' or 'detection') a registered model belongs to."""
    return _entry(name).task


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` override its defaults."""
    entry = _entry(name)
    _check_kwargs(entry, kwargs)
    return entry.factory(**kwargs)


def _entry(name: str) -> ModelEntry:
    _ensure_builtin_models()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    return _REGISTRY[name]


def _check_kwargs(entry: ModelEntry, kwargs: dict) -> None:
    params = inspect.signature(entry.target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if n != "self" and p.kind is not p.VAR_POSITIONAL]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"model {entry.name!r} does not take {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(accepted)}"
        )


def _ensure_builtin_models() -> None:
    # Imported lazily so `registry` stays importable without building MONAI's detection stack.
    from ductai.models import detection, segmentation  # noqa: F401
