"""novaproc's version: `novaproc --version`, and pyproject.toml reads it from here."""

VERSION = "0.1.0"
