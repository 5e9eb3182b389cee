"""Exceptions for failures a user can fix; the CLI prints their message as one line and exits non-zero.

Each message says what went wrong and what to do next, and never holds a secret.
"""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message folded onto one line (for health details, metrics and logs)."""
    return (" ".join(str(exc).split()) or type(exc).__name__)[:limit]


class StudioOpsError(Exception):
    """A failure a user can fix. `exit_code` is what the CLI exits with."""

    exit_code = 1


class BadUsageError(StudioOpsError):
    """A command was called wrongly (a malformed option or argument): the CLI exits 2, as for click's own
    usage errors."""

    exit_code = 2


class ConfigError(StudioOpsError):
    """A setting is missing, malformed or refused (bad URL, weak secret in production)."""


class PortInUseError(StudioOpsError):
    """A port the stack needs is taken by another program."""


class ServiceStartError(StudioOpsError):
    """A service did not start or did not become ready in time."""


class BinaryNotFoundError(StudioOpsError):
    """A bundled server binary (postgres, weed) is not installed."""


class DatabaseUnavailableError(StudioOpsError):
    """The database cannot be reached or refused our credentials."""


class MigrationError(StudioOpsError):
    """A migration file failed; nothing of it stays applied."""


class ChecksumMismatchError(MigrationError):
    """An applied migration file was edited after it ran."""


class MigrationLockTimeoutError(MigrationError):
    """Another runner held the migration lock for longer than we were willing to wait."""


class ConfirmationRequiredError(StudioOpsError):
    """A destructive operation needs an explicit yes."""


class StorageError(StudioOpsError):
    """The S3 endpoint refused or failed a request."""


class StorageUnavailableError(StorageError):
    """The S3 endpoint cannot be reached."""


class StorageAuthError(StorageError):
    """The S3 endpoint refused our credentials."""


class ObjectNotFoundError(StorageError):
    """No such bucket or key."""


class InvalidKeyError(StorageError, BadUsageError):
    """An object key or bucket name that could escape its prefix or break a client; refused before any request
    (bad usage: exit 2)."""


class BackupError(StudioOpsError):
    """A backup could not be made, found or read."""


class CorruptArchiveError(BackupError):
    """An archive failed its checksums, is truncated, or is not a StudioOps backup."""


class RestoreRefusedError(BackupError):
    """Restoring would overwrite data, and --force was not given."""


class RetrievalError(StudioOpsError):
    """Bad input to retrieval (`studioops.rag`): wrong embedding size, malformed row or filter."""
