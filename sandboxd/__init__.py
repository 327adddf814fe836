"""sandboxd: run untrusted tool handlers in per-execution Linux sandboxes."""

__version__ = "0.1.0"
