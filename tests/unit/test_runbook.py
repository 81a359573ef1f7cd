"""Every refusal reason the code can write has an entry in the runbook (docs/operations.md).

Reasons are collected from the source, so a new one fails this test until the runbook has a
``### `reason` `` heading for it:
- every module-level constant ``NAME = "lower_snake_case"`` in schemas/ and streams/ (that is how
  the reason codes are declared: dead letters, unattributed items, unmatched changes);
- every string literal written where a reason goes: the first argument (or ``reason=``) of
  ``InvalidEvent(...)``, ``unmatched=`` of an outcome, the code of a collector ``refuse(...)``.
A constant that is not a reason goes into NOT_REASONS below, with why."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
RUNBOOK = ROOT / "docs" / "operations.md"
SOURCES = [p for pkg in ("schemas", "streams") for p in sorted((ROOT / pkg).rglob("*.py"))]
CODE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
NOT_REASONS: set[str] = set()


def _literal(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def reasons_in(source: str) -> set[str]:
    tree, found = ast.parse(source), set()
    for node in tree.body:  # module-level reason constants
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        value = _literal(getattr(node, "value", None))
        if value and CODE.match(value) and any(isinstance(t, ast.Name) and t.id.isupper() for t in targets):
            found.add(value)
    for node in ast.walk(tree):  # literals where a reason goes
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", ""))
        candidates = [k.value for k in node.keywords if k.arg in ("reason", "unmatched")]
        if name == "InvalidEvent" and node.args:
            candidates.append(node.args[0])
        if name == "refuse" and len(node.args) >= 2:
            candidates.append(node.args[1])
        found.update(v for v in map(_literal, candidates) if v and CODE.match(v))
    return found


def code_reasons() -> set[str]:
    return set().union(*(reasons_in(p.read_text()) for p in SOURCES)) - NOT_REASONS


def runbook_entries() -> set[str]:
    headings = [line for line in RUNBOOK.read_text().splitlines() if line.startswith("#")]
    return {code for line in headings for code in re.findall(r"`([^`]+)`", line)}


def test_every_reason_in_the_code_has_a_runbook_entry():
    missing = sorted(code_reasons() - runbook_entries())
    assert not missing, f"add a '### `reason`' entry to docs/operations.md (under the section of the topic it goes to) for: {missing}"


def test_the_collector_sees_every_kind_of_reason():
    reasons = code_reasons()
    # constants of schemas.validation, streams.core.join and streams.core.changes, and literals
    assert {"malformed_json", "no_click", "duplicate_change", "origin_not_allowed", "rate_limited"} <= reasons
    assert reasons_in('InvalidEvent("brand_new", "x")\nOutcome(unmatched="other_new")\n'
                      'NEW_ONE = "third_new"\nrefuse(409, "fourth_new", "")\n') == \
        {"brand_new", "other_new", "third_new", "fourth_new"}
    assert reasons_in('label = "not_a_constant"\nlog("x", reason=f"{x}")\n') == set()
