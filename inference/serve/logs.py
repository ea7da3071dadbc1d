"""JSON-lines logging for the service: one object per line, easy to ship and to grep.

One line per HTTP request (method, route template, status, ms, analysis id) and one per
finished analysis. Lines carry identifiers only (analysis id, UIDs), never patient
identity: fields whose name mentions a patient are dropped as a safety net.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

__all__ = ["ACCESS_LOGGER", "JsonFormatter", "log_request", "setup_json_logging"]

ACCESS_LOGGER = "ductai.serve.access"

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of msg
}
_FORBIDDEN = ("patient",)  # PatientName, PatientID, patient_id, ...


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if any(word in key.lower() for word in _FORBIDDEN):
                continue
            document[key] = value
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def setup_json_logging(stream: TextIO | None = None, verbose: bool = False) -> None:
    """Route ductai's and uvicorn's loggers to one JSON-lines handler on ``stream``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("ductai").setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.INFO)
    # Our own access line replaces uvicorn's (route templates, analysis ids, no query).
    logging.getLogger("uvicorn.access").disabled = True


def log_request(
    method: str, route: str, status: int, ms: float, analysis_id: str | None = None
) -> None:
    logging.getLogger(ACCESS_LOGGER).info(
        "%s %s %d",
        method,
        route,
        status,
        extra={
            "event": "request",
            "method": method,
            "route": route,
            "status": status,
            "ms": round(ms, 1),
            "analysis_id": analysis_id,
        },
    )
