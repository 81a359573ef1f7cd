"""The configuration reference (docs/configuration.md), generated from the one declaration in
``streams.config``.

``python -m streams.tools.configdoc`` prints it; a unit test fails when the page is out of date."""
from __future__ import annotations

import types
import typing

from pydantic import BaseModel

from connectors import TRANSPORTS

from ..config import Settings


def _type(annotation) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _type(args[0]) + " \\| None"
    text = str(annotation)
    for module in ("typing.", "pathlib.", "connectors.credentials.", "streams.config."):
        text = text.replace(module, "")
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    return text.replace("<class '", "").replace("'>", "").replace("|", "\\|")


def _rows(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and ann.__name__.endswith("Settings"):
            yield from _rows(ann, key + ".")
            continue
        if field.is_required():
            default = "**required**"
        elif field.default_factory is not None:
            default = "(from environment)" if name == "instance_id" else f"`{field.default_factory()}`"
        else:
            default = f"`{field.default}`" if field.default is not None else "—"
        yield f"| `{key}` | {_type(ann)} | {default} | {field.description or ''} |"


def render() -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [r for r in _rows(Settings) if not r.startswith("| `connections`")]
    lines.append("| `connections` | list | **required** | One entry per connection, see below. |")
    methods: dict[type, list[str]] = {}
    for method, (model, _) in TRANSPORTS.items():
        methods.setdefault(model, []).append(f"`{method}`")
    for model, names in methods.items():
        lines += ["", f"Connection method {' / '.join(names)}:", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        lines += list(_rows(model, "connections[]."))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
