"""Event contracts (JSON Schema, usable by producers in any language), the CSV column
specification, and the validation the agents run on every event."""
from __future__ import annotations

import json
from importlib import resources


def load(name: str) -> dict:
    return json.loads(resources.files(__name__).joinpath(name).read_text())


CSV_SPEC = load("conversion-csv.json")
CSV_HEADER: tuple[str, ...] = tuple(c["name"] for c in CSV_SPEC["columns"])
CSV_MAX_ROWS: int = CSV_SPEC["max_rows"]
