"""The New run form's method settings, derived from each spec's JSON schema: no method has HTML
or JavaScript of its own. Each field becomes one input of a small set of kinds."""
from app.methods import MethodSpec


def _plain(prop: dict) -> tuple[dict, bool]:
    """(the non-null branch of an optional field, whether null is allowed)."""
    branches = prop.get("anyOf")
    if not branches:
        return prop, False
    real = [b for b in branches if b.get("type") != "null"]
    return {**prop, **real[0]}, len(real) < len(branches)


def form_fields(spec: MethodSpec) -> list[dict]:
    """One dict per setting: name, kind (number | integer | choice | check | text | list | runs),
    label, help, default, bounds, options, show_if, and `runs` (the filter of a run picker)."""
    schema = spec.schema()
    required = set(schema.get("required", []))
    out = []
    for name, raw in schema.get("properties", {}).items():
        if name == "type":
            continue
        prop, nullable = _plain(raw)
        field = {"name": name, "label": raw.get("title") or name.replace("_", " ").capitalize(),
                 "help": raw.get("description", ""), "default": raw.get("default"), "show_if": raw.get("x-show-if"),
                 "optional": nullable and name not in required}
        if "enum" in prop:
            labels = raw.get("x-labels", {})
            none = [("", labels.get("null", "Default"))] if nullable else []  # "" is sent as null
            field |= {"kind": "choice", "options": none + [(v, labels.get(v, v)) for v in prop["enum"]]}
        elif prop.get("type") == "boolean":
            field |= {"kind": "check"}
        elif prop.get("type") in ("integer", "number"):
            low = prop.get("minimum", prop.get("exclusiveMinimum"))
            field |= {"kind": "number", "min": low, "max": prop.get("maximum", prop.get("exclusiveMaximum")),
                      "step": 1 if prop["type"] == "integer" else "any"}
        elif prop.get("type") == "array" and "x-runs" in raw:
            field |= {"kind": "runs", "runs": raw["x-runs"]}
        elif prop.get("type") == "array":
            field |= {"kind": "list"}
        else:
            field |= {"kind": "text", "max_length": prop.get("maxLength")}
        out.append(field)
    return out
