"""Results as strict JSON: undefined scores (NaN) become null, numpy values plain numbers."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def nan_to_none(value: Any) -> Any:
    """``value`` with every float NaN (in nested dicts, lists and tuples) replaced by None."""
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    return value


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def dumps(results: Any, indent: int = 2) -> str:
    """Strict JSON text (no NaN) for a results dict."""
    return json.dumps(nan_to_none(json.loads(json.dumps(results, default=_plain))), indent=indent, allow_nan=False)
