"""Durations as a person writes them ("90s", "10m", "1h30m", "30d") in a tasks file or nova.toml.

Apart from `taskfile` so that reading the settings alone (`status`) does not load what checks tasks.
"""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
                       r"(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(value: object) -> float:
    """Seconds from "90s", "10m", "1h30m", "30d" or a number. Raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a duration cannot be true/false")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())) and any(m.groups()):
        d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = d * 86400 + h * 3600 + mi * 60 + s
    elif isinstance(value, str) and re.fullmatch(r"\d+(?:\.\d+)?", value.strip()):
        seconds = float(value)
    else:
        raise ValueError(f'invalid duration {value!r}; use seconds or a form like "90s", "10m", '
                         '"1h30m", "30d"')
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds
