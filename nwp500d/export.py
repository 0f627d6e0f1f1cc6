"""Export text: readable by people and fast to produce.

``json.dumps(indent=2)`` falls back to CPython's pure-Python encoder and is several times slower than the C one; this
layout keeps the C encoder for every value and still puts one top-level key, one metric and one drop per line, which
is what a person scrolling a snapshot (or diffing two) wants.
"""

from __future__ import annotations

import json
from typing import Any

_encode = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(", ", ": ")).encode


def format_export(data: dict[str, Any]) -> str:
    parts = ["{"]
    last = len(data) - 1
    for index, (key, value) in enumerate(data.items()):
        comma = "," if index < last else ""
        name = _encode(key)
        if isinstance(value, list) and value:
            body = ",\n".join("    " + _encode(item) for item in value)
            parts.append(f"  {name}: [\n{body}\n  ]{comma}")
        elif isinstance(value, dict) and value:
            body = ",\n".join(f"    {_encode(k)}: {_encode(v)}" for k, v in value.items())
            parts.append(f"  {name}: {{\n{body}\n  }}{comma}")
        else:
            parts.append(f"  {name}: {_encode(value)}{comma}")
    parts.append("}")
    return "\n".join(parts) + "\n"
