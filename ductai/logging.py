"""Console logging set-up shared by every subcommand."""

from __future__ import annotations

import logging
import os
import warnings


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    # Libraries that log through the root logger (MONAI's detection matchers) stay at WARNING;
    # ductai's own loggers speak at INFO.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("ductai").setLevel(level)
    # Third-party chatter that hides ductai's own messages.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for noisy in ("PIL", "matplotlib", "urllib3", "pydicom.pixels", "highdicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
