"""The exception hierarchy of exitsearch.

Every error a user can cause derives from :class:`ExitSearchError` and carries a message that
fits on one line and says what was expected. The CLI turns these into a one-line message and
exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "BackboneError",
    "BudgetError",
    "BundleError",
    "CacheError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ExitSearchError",
    "RunFolderBusyError",
    "SearchSpaceError",
    "TrainingDivergedError",
]


class ExitSearchError(Exception):
    """Base class of every error that a user's input or environment can cause."""


class ConfigError(ExitSearchError, ValueError):
    """A setting, option or configuration value is not allowed."""


class BudgetError(ConfigError):
    """A budget string cannot be parsed, or no configuration can meet the budget."""


class SearchSpaceError(ConfigError):
    """A search-space file is malformed; the message names the file, the key and what is allowed."""


class DataError(ExitSearchError):
    """A dataset file is missing, truncated or inconsistent."""


class BackboneError(ExitSearchError):
    """A backbone cannot be built: unknown name, impossible override, unsupported family."""


class CheckpointError(ExitSearchError):
    """A checkpoint cannot be read or does not fit the model it is loaded into."""


class BundleError(ExitSearchError):
    """An exported bundle is missing files, was altered, or comes from a newer schema."""

    @classmethod
    def not_a_folder(cls, root: object) -> BundleError:
        """The error for a bundle path that is no folder."""
        return cls(f"{root}: not a bundle folder (it does not exist or is a file)")


class CacheError(ExitSearchError):
    """A cached stage artifact is unreadable or does not match its recorded checksum."""


class RunFolderBusyError(ExitSearchError):
    """Another process holds the run folder."""


class TrainingDivergedError(ExitSearchError):
    """Training produced a non-finite loss; the last good checkpoint is kept."""
