"""Every error a ConfigWatcher reports (on ``status``, to ``on_error``, or raised by the initial load).

All are ConfigError, except the OSError of a file that cannot be opened or
read, which is reported as it is (FileNotFoundError, PermissionError ...).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigLimitError",
    "EmptyConfigError",
    "NotRegularFileError",
    "ParseError",
    "PublishError",
    "SourceError",
    "UnsettledError",
    "ValidationError",
    "ValidatorError",
    "WatcherStoppedError",
]


class ConfigError(Exception):
    """A configuration could not be loaded; the last good config was kept."""


class ParseError(ConfigError):
    """The content is not valid in its format (or was read half-written)."""


class ConfigLimitError(ParseError):
    """The content exceeds one of the watcher's ConfigLimits, and was refused before it could cost more.

    ``limit`` names the ConfigLimits field ("max_bytes", "max_depth",
    "max_nodes", "max_aliases") and ``maximum`` is its value.
    """

    def __init__(self, limit: str, maximum: int, message: str) -> None:
        self.limit = limit
        self.maximum = maximum
        super().__init__(f"{message} (limit {limit}={maximum}; raise it with ConfigLimits({limit}=...))")

    def __reduce__(self) -> tuple[object, ...]:
        return (_limit_error, (type(self), str(self), self.limit, self.maximum))


class ValidationError(ConfigError):
    """The validate callable rejected the parsed content: ``errors`` says why."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("validation failed: " + "; ".join(errors))

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.errors,))


class ValidatorError(ValidationError, TypeError):
    """The validate callable broke its contract (returned something that is not None, a bool or
    a list or tuple of errors); the content was not published."""


class EmptyConfigError(ConfigError):
    """The content parsed to nothing while the current config is not empty (allow_empty=False)."""


class NotRegularFileError(ConfigError):
    """The path names something other than a regular file (a FIFO, a device, a directory, a socket).

    It is never read: a FIFO would block the reader forever and a device such
    as /dev/zero never ends. ``kind`` says what was found.
    """

    def __init__(self, path: str, kind: str) -> None:
        self.path = path
        self.kind = kind
        super().__init__(f"{path} is a {kind}, not a regular file: not read")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.kind))


class UnsettledError(ConfigError):
    """The file kept changing for longer than ``max_delay`` seconds: not loaded (yet).

    It is looked at again on the next check, and published once it has
    stopped changing for ``quiet`` seconds.
    """


class PublishError(ConfigError):
    """The content was valid but publishing it to the store failed (the cause is chained)."""


class SourceError(ConfigError):
    """A source failed in a way that is neither a ConfigError nor an OSError (the cause is chained)."""


class WatcherStoppedError(ConfigError):
    """The watcher stopped because a BaseException that is not an Exception (KeyboardInterrupt,
    SystemExit ...) was raised inside a load, by the validator, a callback or the source.
    The BaseException is chained as ``__cause__``; the last good config was kept."""


def _limit_error(cls: type[ConfigLimitError], message: str, limit: str, maximum: int) -> ConfigLimitError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.limit, error.maximum = limit, maximum
    return error
