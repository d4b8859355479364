"""Reading a TOML file (a tasks file, nova.toml): every failure (size, encoding, syntax,
nesting, a NUL byte in a string) becomes one ConfigError naming the file.

Apart from `taskfile` so that reading the settings alone (`status`, `lock`) does not load what
checks tasks.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from novaproc.errors import ConfigError
from novaproc.inputs.trust import check_strings

MAX_FILE_BYTES = 8 * 1024 * 1024


def read_toml(path: Path, name: str) -> dict[str, Any]:
    """TOML from `path` with every failure (size, encoding, syntax, nesting) as ConfigError."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(name, "is a directory; give the path of a .toml file")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a terminal would hang the reading
            raise ConfigError(name, "is not a regular file (a pipe, a device?); write the tasks to a "
                              "file and give its path")
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(name, "no such file") from None
    except PermissionError:
        raise ConfigError(name, "cannot be read: permission denied") from None
    except OSError as e:
        raise ConfigError(name, f"cannot be read: {e.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(name, f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; "
                          "a tasks file this big is almost certainly a mistake")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(name, f"is not valid UTF-8 (byte {e.start}, line {line})") from None
    import tomllib  # not at the top: a cached tasks file is not parsed again (see `inputs`)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        where = "" if "line" in str(e) else f" (line {text.count(chr(10)) + 1})"
        raise ConfigError(name, f"TOML syntax error: {e}{where}") from None
    except RecursionError:
        raise ConfigError(name, "TOML nesting is too deep to be a tasks file") from None
    # TOML refuses a raw NUL: only these escapes make one, so a file without them needs no walk
    if "\\u0000" in text or "\\U00000000" in text:
        check_strings(name, data)
    return data
