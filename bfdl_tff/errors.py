"""Exceptions shared across bfdl_tff. User-facing errors carry the file and the problem."""

from __future__ import annotations


class BfdlError(Exception):
    """Base class for errors reported to the user as one line, exit code 2."""

    exit_code = 2


class ConfigError(BfdlError):
    """A configuration file is malformed: names the file, the key and the problem."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class DataError(BfdlError):
    """A dataset, manifest or image file is missing or invalid (names the file)."""


class RunDirError(BfdlError):
    """A run directory exists and would be overwritten, or is unusable."""
