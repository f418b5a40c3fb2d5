"""Errors that the CLI turns into one-line messages and exit codes.

Every error a user can cause (bad file, bad config, missing optional package) is an `RtkpError`; anything else is a bug
and keeps its traceback.
"""


class RtkpError(Exception):
    """Base class: a problem the user can fix. `exit_code` is what `rtkp` exits with."""

    exit_code = 1


class ConfigError(RtkpError):
    """A configuration value or command-line argument is invalid."""

    exit_code = 2


class DataError(RtkpError):
    """A dataset file is missing, malformed or inconsistent."""

    exit_code = 3


class SourceError(RtkpError):
    """A video/camera/stream source cannot be opened or read."""

    exit_code = 4


class ModelError(RtkpError):
    """A model folder is missing, corrupt or incompatible."""

    exit_code = 5


class EngineError(RtkpError):
    """An inference backend cannot be used here."""

    exit_code = 6


class MissingDependencyError(RtkpError):
    """An optional package is needed for this command; the message says which extra to install."""

    exit_code = 7


class PipelineError(RtkpError):
    """A stage of a run failed or died (the message names it)."""


class Interrupted(RtkpError):
    """SIGINT or SIGTERM stopped a run; `summary` holds what was done until then."""

    exit_code = 130

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary or {}


class ProtocolError(RtkpError):
    """A stream message this client cannot read (e.g. another schema version)."""


class StreamTimeout(RtkpError):
    """No keypoints message came within the subscriber's timeout (the message says what it waited for)."""


def require(module: str, extra: str):
    """Import an optional module or raise MissingDependencyError naming the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this command needs the Python package '{module}': pip install 'rtkp[{extra}]' ({exc})"
        ) from None


class ExportFailed(RtkpError):
    """`rtkp export` could not finish: an output that cannot be written, or inputs that failed (the message says)."""


class ControlError(RtkpError):
    """A control request (rtkp.control) that cannot be done: `code` names the reason for machines (docs/PROTOCOL.md,
    "Control"), the message says it for people. The running pipeline is never disturbed by one."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
