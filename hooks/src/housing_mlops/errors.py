"""Errors users can act on: each is printed as one line and maps to an exit code.

Every exit code of `housing-mlops` lives here (the chart's podFailurePolicy lists the verdicts, 2-7, that a
retry cannot change):

| code | meaning |
| --- | --- |
| 0 | done |
| 1 | an error a retry may fix (a service down, a crash) |
| 2 | bad arguments (click's usage errors) |
| 3 | GateRejected: the quality gate refused the candidate; the champion keeps serving |
| 4 | TrainingFailed: the training a promotion waits for failed |
| 5 | Superseded: Helm is no longer deploying this revision (timed out, rolled back, uninstalled): nothing moved |
| 6 | Gone: the version to restore no longer exists (deleted, or its artifacts are gone): nothing moved |
| 7 | IntegrityError: the model's files differ from what its training recorded, it has no such record, or its URI lies outside the artifact root: nothing was loaded |
"""

from __future__ import annotations

USAGE_EXIT_CODE = 2  # click.UsageError.exit_code; named here so the table above is complete


class HousingError(Exception):
    """Base class: an expected failure with a clear message (no stack trace)."""

    exit_code = 1


class ConfigError(HousingError):
    """A flag, environment variable or file is wrong or missing."""


class ServiceUnavailable(HousingError):
    """A service (MLflow, S3, the model server) did not answer within the retry budget."""


class NotFound(HousingError):
    """A model, version, alias or artifact does not exist."""


class DataError(HousingError):
    """The dataset is missing, corrupt or has the wrong schema."""


class GateRejected(HousingError):
    """The quality gate refused to promote the candidate."""

    exit_code = 3


class TrainingFailed(HousingError):
    """The training this promotion waits for has failed: waiting longer, or retrying, cannot help."""

    exit_code = 4


class Superseded(HousingError):
    """Helm gave up on (or replaced, or uninstalled) the revision this hook acts for: its outcome must not apply."""

    exit_code = 5


class Gone(NotFound):
    """The version a rollback restores was deleted, or its artifacts are gone: nothing served changes."""

    exit_code = 6


class IntegrityError(HousingError):
    """The model's files are not the ones its training registered (changed, added, missing, no record of them), or
    the registry sent us outside the artifact root: nothing is loaded, and fetching again gives the same answer."""

    exit_code = 7


# Verdicts: a retry gives the same answer, so the hook Jobs fail at once on them (podFailurePolicy).
VERDICT_EXIT_CODES = (USAGE_EXIT_CODE, GateRejected.exit_code, TrainingFailed.exit_code, Superseded.exit_code,
                      Gone.exit_code, IntegrityError.exit_code)  # fmt: skip
