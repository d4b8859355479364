"""novaproc: run many jobs at once on one machine without letting them trample each other."""

__version__ = "0.1.0"
