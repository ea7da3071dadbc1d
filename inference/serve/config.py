"""The service config (``ductai serve``): ``configs/serve.yaml`` + ``key=value`` overrides +
``DUCTAI_SERVE_TOKENS``, validated into :class:`ServeConfig` (docs/serve-design.md).

Every section forbids unknown keys, so a typo is one message naming the dotted key.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ductai.config import ConfigError, apply_overrides, read_yaml, validate
from ductai.configs import CONFIG_DIR

__all__ = [
    "DEFAULT_CONFIG",
    "TOKENS_ENV",
    "ConfigError",
    "DicomConfig",
    "DicomDestination",
    "RetryConfig",
    "ServeConfig",
    "load_serve_config",
]

DEFAULT_CONFIG = CONFIG_DIR / "serve.yaml"
TOKENS_ENV = "DUCTAI_SERVE_TOKENS"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DicomDestination(_Section):
    """Where results are sent by C-STORE (a PACS or the reading station)."""

    ae_title: str = Field(min_length=1, max_length=16)
    host: str
    port: int = Field(ge=1, le=65535)


class RetryConfig(_Section):
    """Back-off of the outbox: ``initial_s`` doubling up to ``max_s``; ``forever: false``
    gives up after ``max_s`` is reached once."""

    initial_s: float = Field(2.0, gt=0)
    max_s: float = Field(300.0, gt=0)
    forever: bool = True


class DicomConfig(_Section):
    enabled: bool = True
    ae_title: str = Field("DUCTAI", min_length=1, max_length=16)
    # Address the SCP listens on; None: the server's `host`. A PACS on another machine needs
    # a reachable address (e.g. 0.0.0.0) even while HTTP stays on loopback.
    host: str | None = None
    port: int = Field(11112, ge=0, le=65535)  # 0: any free port (tests)
    allowed_calling_aes: list[str] = []  # empty: any calling AE
    settle_seconds: float = Field(10.0, ge=0)  # quiet time after which a study is analysed
    destination: DicomDestination | None = None
    retry: RetryConfig = Field(default_factory=RetryConfig)


class ServeConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)  # 0: any free port (tests)
    model: str | None = None  # bundle folder, checkpoint or MLflow URI; None: default bundle
    device: str = "cpu"
    # torch / ONNX Runtime intra-op threads; None keeps torch's default (all cores).
    threads: int | None = Field(None, ge=1)
    backend: str = "auto"  # segmentation backend: auto, eager, onnx (PredictorOptions)
    data_dir: Path = Path("serve-data")
    workers: int = Field(1, ge=1)  # inference threads
    queue_size: int = Field(8, ge=1)  # analyses waiting; more gets 503
    max_request_mb: float = Field(200, gt=0)
    sync_timeout_s: float = Field(120, gt=0)
    max_attempts: int = Field(3, ge=1)
    tokens: list[str] = []
    metrics_auth: bool = False
    dicom: DicomConfig = Field(default_factory=DicomConfig)

    @field_validator("tokens")
    @classmethod
    def _no_empty_tokens(cls, tokens: list[str]) -> list[str]:
        if any(not t.strip() for t in tokens):
            raise ValueError("a token may not be empty")
        return tokens

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)


def load_serve_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> ServeConfig:
    """``path`` (default: the shipped configs/serve.yaml) + ``key=value`` overrides; tokens
    in ``DUCTAI_SERVE_TOKENS`` ("a,b") are added to the config's, so secrets stay out of files
    and command lines."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    content = apply_overrides(read_yaml(path), overrides or [])
    env = os.environ if environ is None else environ
    extra = [t.strip() for t in env.get(TOKENS_ENV, "").split(",") if t.strip()]
    if extra:
        tokens = content.get("tokens") or []
        if not isinstance(tokens, list):
            raise ConfigError(f"{path}: tokens: expected a list, got {tokens!r}")
        content["tokens"] = [*tokens, *(t for t in extra if t not in tokens)]
    return validate(ServeConfig, content, source=str(path))
