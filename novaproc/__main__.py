"""`python -m novaproc`."""

from novaproc.cli import entry

if __name__ == "__main__":
    entry()
