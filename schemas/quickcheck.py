"""A fast yes for valid events: the schema's own rules compiled into one Python function.

fastjsonschema's generated code costs ~10 µs per order item (the currency enum is a list scan,
every keyword a branch); on the hot path that is half the budget. ``compile_quick`` turns a
contract into one function once, with the same regular expressions fastjsonschema uses, and
answers only "certainly valid". Anything it is not sure of (a wrong
type, a bound missed, a keyword it does not know) goes to fastjsonschema, which stays the
authority and names the reason. So the quick check can make validation faster, never laxer:
``tests/unit/test_quickcheck.py`` compares the two on generated valid and invalid events.
"""
from __future__ import annotations

import re
from typing import Callable

from fastjsonschema.draft04 import DOLLAR_FINDER
from fastjsonschema.draft07 import CodeGeneratorDraft07

_DOCS = {"$id", "$schema", "title", "description"}
_TYPES = {"string": "str", "integer": "int"}


class Unsupported(ValueError):
    """The schema uses a keyword the quick check does not implement: validate the slow way."""


def compile_quick(schema: dict) -> Callable[[object], bool]:
    """One generated function with every field's rules inline (a loop of small checks costs
    more than the checks themselves)."""
    definitions = schema.get("definitions", {})
    known = _DOCS | {"type", "required", "properties", "definitions"}
    if set(schema) - known or schema.get("type") != "object":
        raise Unsupported(", ".join(sorted(set(schema) - known)) or "not an object")
    required = set(schema.get("required", ()))
    if required - set(schema["properties"]):
        raise Unsupported("required field without a definition")
    names: dict[str, object] = {}
    lines = ["def valid(e):", "    if type(e) is not dict: return False", "    try:"]
    optional = []
    for i, (name, prop) in enumerate(schema["properties"].items()):
        rule = " and ".join(_rules(_resolve(prop, definitions), i, names))
        if name in required:
            lines += [f"        v = e[{name!r}]", f"        if not ({rule}): return False"]
        else:
            optional += [f"        if {name!r} in e:", f"            v = e[{name!r}]",
                         f"            if not ({rule}): return False"]
    lines.append("    except KeyError: return False")  # a required field is missing
    if optional:  # an event of only the required fields skips them all
        lines += [f"    if len(e) > {len(required)}:"] + optional
    lines.append("    return True")
    exec("\n".join(lines), names)  # noqa: S102 -- source built above from the schema's own rules
    return names["valid"]


def _resolve(prop: dict, definitions: dict) -> dict:
    if "$ref" not in prop:
        return prop
    ref = prop["$ref"]
    if not ref.startswith("#/definitions/") or set(prop) - _DOCS - {"$ref"}:
        raise Unsupported(ref)
    return definitions[ref.rsplit("/", 1)[1]]


def _rules(prop: dict, i: int, names: dict) -> list[str]:
    kind = _TYPES.get(prop.get("type"))
    if kind is None:
        raise Unsupported(f"type {prop.get('type')!r}")
    rules = [f"type(v) is {kind}"]  # bool is not int, 1.0 is not int: both go the slow way
    for key, rule in prop.items():
        if key in _DOCS or key == "type":
            continue
        if kind == "str" and key in ("minLength", "maxLength"):
            rules.append(f"len(v) {'>=' if key == 'minLength' else '<='} {int(rule)}")
        elif kind == "int" and key in ("minimum", "maximum"):
            rules.append(f"v {'>=' if key == 'minimum' else '<='} {int(rule)}")
        elif key == "enum":
            names[f"enum{i}"] = frozenset(rule)
            rules.append(f"v in enum{i}")
        elif kind == "str" and key == "pattern":  # fastjsonschema's reading of ``$``: end of string
            names[f"pattern{i}"] = re.compile(DOLLAR_FINDER.sub(r"\\Z", rule)).search
            rules.append(f"pattern{i}(v) is not None")
        elif kind == "str" and key == "format" and rule in CodeGeneratorDraft07.FORMAT_REGEXS:
            names[f"format{i}"] = re.compile(CodeGeneratorDraft07.FORMAT_REGEXS[rule]).match
            rules.append(f"format{i}(v) is not None")
        else:
            raise Unsupported(f"{key}: {rule!r}")
    return rules
