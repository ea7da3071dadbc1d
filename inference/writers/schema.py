"""JSON Schemas of report.json and study_report.json, and validation against them."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

__all__ = ["load_schema", "validate_report", "validate_study_report"]


@cache
def load_schema(name: str) -> dict[str, Any]:
    """`report` or `study_report`: the published schema (inference/schemas/NAME.schema.json)."""
    text = resources.files("ductai.inference").joinpath(f"schemas/{name}.schema.json").read_text()
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _validate(document: dict[str, Any], name: str) -> None:
    validator = jsonschema.Draft202012Validator(load_schema(name))
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
        raise jsonschema.ValidationError(f"{name}.json is invalid:\n" + "\n".join(lines[:20]))


def validate_report(report: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError listing every problem of a view report."""
    _validate(report, "report")


def validate_study_report(report: dict[str, Any]) -> None:
    _validate(report, "study_report")
