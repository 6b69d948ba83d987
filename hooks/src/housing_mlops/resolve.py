"""`housing-mlops resolve`: an alias or version → the physical s3:// URI KServe can load."""

from __future__ import annotations

from . import registry
from .errors import ConfigError


def resolve(name: str, alias: str | None, version: str | None) -> tuple[str, str]:
    """Returns (version, s3 uri)."""
    if bool(alias) == bool(version):
        raise ConfigError("give exactly one of --alias or --version")
    found = registry.get_version(name, alias=alias, version=version)
    return str(found.version), registry.physical_uri(name, str(found.version))
