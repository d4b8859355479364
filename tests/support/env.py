"""The environment a novaproc process started by a test gets."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping


def clean_env(extra: Mapping[str, str] | None = None, *, drop: Iterable[str] = ()) -> dict[str, str]:
    """os.environ without NOVA_* settings (so the caller's shell cannot leak in) and without the
    variables named in `drop`, plus `extra`."""
    dropped = set(drop)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_") and k not in dropped}
    env.update(extra or {})
    return env
