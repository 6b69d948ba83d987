"""Errors users can act on: each is printed as one line and maps to an exit code."""

from __future__ import annotations


class HousingError(Exception):
    """Base class: an expected failure with a clear message (no stack trace)."""

    exit_code = 1


class ConfigError(HousingError):
    """A flag, environment variable or file is wrong or missing."""


class ServiceUnavailable(HousingError):
    """A service (MLflow, S3, MLServer) did not answer within the retry budget."""


class NotFound(HousingError):
    """A model, version, alias or artifact does not exist."""


class DataError(HousingError):
    """The dataset is missing, corrupt or has the wrong schema."""


class GateRejected(HousingError):
    """The quality gate refused to promote the candidate."""

    exit_code = 3
