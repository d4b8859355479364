"""`python -m novaproc`."""

from novaproc.cli.main import entry

if __name__ == "__main__":
    entry()
