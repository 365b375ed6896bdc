"""One error family: what the user must fix, what stopped a run, and what became one row's error.

Three branches under :class:`GenixerError`, and the command line maps each to one exit status:

- :class:`UserError` (exit 2): a configuration, input, annotation source, checkpoint or store
  that cannot be used, found before any work starts; the message names the field or file.
- :class:`RunFailed` (exit 1): a run that started and could not finish (an engine dead after its
  retries, a stage that broke the row contract, a store that failed mid-run); committed work is
  kept and the same command resumes.
- :class:`RowError`: one row (an image, a generated text, an annotation record) that cannot be
  used. It never reaches the command line: the stage that catches it writes an error row (or a
  counted skip) with its ``code``, and the run goes on.

The user and run branches also derive from the built-in class their callers caught before
(``ValueError``, ``RuntimeError``), so ``except ValueError`` around a config load still works.
"""

from __future__ import annotations


class GenixerError(Exception):
    """The base of every error genixer-ray raises on purpose."""

    exit_code = 1


class UserError(GenixerError, ValueError):
    """Something the user gave cannot be used; the message says what and where. Exit status 2."""

    exit_code = 2


class ConfigError(UserError):
    """A configuration that cannot be used; the message names each bad field."""


class InputError(UserError):
    """An input that cannot be listed at all (missing folder, malformed manifest, duplicate ids)."""


class NotARunError(UserError):
    """A folder that holds no run (or filter pass) where one was named."""


class RunFailed(GenixerError, RuntimeError):
    """A run that started and could not finish; what it committed stays, and a re-run resumes."""


class StageContractError(RunFailed):
    """A stage broke the contract: one row out per row in, same image ids, same order."""


class StorageError(RunFailed):
    """The store failed: a shard that did not read back as written, or a store that went away."""


class StoreUnusableError(StorageError, UserError):
    """The output store cannot be used at the start (unreachable, no permission). Exit status 2."""

    exit_code = 2


class RowError(GenixerError):
    """One row that cannot be used: ``code`` is a stable, countable reason; ``message`` the detail.

    Decode, parse and annotation-conversion failures share this shape; the stage that catches one
    turns it into an error row (:meth:`as_row`) or a counted skip.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def as_row(self, row: dict, stage: str) -> dict:
        """``row`` marked as failed at ``stage`` with this error's code and message."""
        return fail(row, stage, self.code, self.message)


def fail(row: dict, stage: str, code: str, message: str) -> dict:
    """``row`` marked as failed at ``stage`` with an error ``code`` and ``message``."""
    return {**row, "status": "error", "error_stage": stage, "error_code": code, "error_message": message}


def skip(row: dict, stage: str, code: str, message: str) -> dict:
    """``row`` left out on purpose at ``stage`` (status ``skipped``; a contaminated image, say):
    nothing failed, and it is not generated on; ``code`` and ``message`` say why."""
    return {**row, "status": "skipped", "error_stage": stage, "error_code": code, "error_message": message}
