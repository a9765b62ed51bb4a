"""The ``results.json`` schema (documented in ``docs/results-schema.md``) and a small validator.

The schema is written in a JSON-Schema subset (``type``, ``required``, ``properties``,
``additionalProperties``, ``items``, ``minimum``/``maximum``, ``enum``) that :func:`validate_results`
checks without any extra dependency.
"""

from typing import Any

from drtk.errors import DataError

SCHEMA_VERSION = 1

_NUM = {"type": ["number", "null"]}
_RATE = {
    "type": "object",
    "required": ["rate", "ci_low", "ci_high", "n", "k", "judge"],
    "properties": {"rate": _NUM, "ci_low": _NUM, "ci_high": _NUM, "n": {"type": "integer", "minimum": 0},
                   "k": {"type": "integer", "minimum": 0}, "judge": {"type": "string"}},
}
_OVER_REFUSAL = {  # looping_answers and refused_or_looping: absent from results written before they were counted
    "type": "object", "required": _RATE["required"],
    "properties": _RATE["properties"] | {"looping_answers": {"type": "integer", "minimum": 0},
                                         "refused_or_looping": _RATE},
}
_ATTACK = {
    "type": "object",
    "required": ["attack", "params", "asr", "ci_low", "ci_high", "n", "k", "judge", "kl", "seconds", "forward_passes"],
    "properties": {
        "attack": {"type": "string"}, "params": {"type": "object"}, "knob": {"type": ["string", "null"]},
        "asr": _NUM | {"minimum": 0, "maximum": 1}, "ci_low": _NUM, "ci_high": _NUM,
        "n": {"type": "integer", "minimum": 0}, "k": {"type": "integer", "minimum": 0}, "judge": {"type": "string"},
        "kl": _NUM, "seconds": {"type": "number", "minimum": 0}, "forward_passes": {"type": "integer", "minimum": 0},
        "metadata": {"type": "object"},
        "coherence": {"type": "object", "required": ["rate", "ci_low", "ci_high", "n", "k", "nll_threshold"]},
    },
}
RESULTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema_version", "drtk_version", "model", "reference", "judge", "generation", "prompts",
                 "contamination", "attacks", "over_refusal", "capability", "comparisons"],
    "properties": {
        "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
        "drtk_version": {"type": "string"},
        "model": {"type": "string"},
        "reference": {"type": ["string", "null"]},
        "judge": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        "generation": {"type": "object", "required": ["max_new_tokens"]},
        "prompts": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["name", "source", "n", "sha256"]}},
        "contamination": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["n_eval", "n_overlap", "by_source"]}},
        "attacks": {"type": "object", "additionalProperties": _ATTACK},
        "over_refusal": {"type": "object", "additionalProperties": _OVER_REFUSAL},
        "reference_over_refusal": {"type": "object", "additionalProperties": _OVER_REFUSAL},
        "capability": {"type": ["object", "null"], "properties": {"kl": _NUM, "ppl": _NUM, "reference_ppl": _NUM,
                                                                  "n_prompts": {"type": "integer"}}},
        "comparisons": {"type": "object"},
    },
}

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def schema_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every violation of ``schema`` in ``value``, as ``"path: problem"`` strings."""
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_is(value, t) for t in types):
            return [f"{path}: expected {'/'.join(types)}, got {type(value).__name__}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if _is(value, "number") and value == value:  # NaN passes bounds checks
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, dict):
        errors += [f"{path}: missing required key {k!r}" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        for k, v in value.items():
            sub = props.get(k, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                errors += schema_errors(v, sub, f"{path}.{k}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            errors += schema_errors(v, schema["items"], f"{path}[{i}]")
    return errors


def validate_results(results: Any) -> None:
    """Raise :class:`~drtk.errors.DataError` listing every way ``results`` breaks the schema."""
    errors = schema_errors(results, RESULTS_SCHEMA)
    if errors:
        raise DataError("results.json does not match the schema:\n  " + "\n  ".join(errors[:20]))
