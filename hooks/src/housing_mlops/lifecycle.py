"""The model lifecycle under Helm's verbs: which version a release revision trains, promotes and serves.

One model, described as a table in docs/chart.md:

- **Training identity.** A hash of what determines the model (dataset, training parameters, jobs image, an
  explicit retrain nonce), computed by the chart and passed as ``--identity``. The training Job is named by it and
  `train` reuses a READY version that carries it: an upgrade that changes nothing the model depends on trains
  nothing, and `helm rollback` re-applies a Job that finds its version already registered.
- **Champion per revision.** The promotion hook of revision N records on the registered model which version the
  alias holds when it is done (promoted, already there, or kept because the gate rejected the candidate). The
  post-rollback hook of a rollback to N restores exactly that version: no training, no gate (it was gated when
  it was promoted). After a rejected upgrade, rolling back keeps today's champion.
- **Bootstrap decided at run time.** The training pod promotes its own version only while the alias does not
  exist yet ("no champion"), whatever Helm verb created the pod: a retried install converges, a rollback to
  revision 1 does not replay the first promotion.
- **Fail fast.** The promotion hook waiting for its identity's version stops within seconds once the training
  failed (a FAILED run tagged with the identity, or the training Job's Failed condition) and names the cause.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from . import registry
from .errors import ConfigError, HousingError, NotFound

log = logging.getLogger(__name__)

IDENTITY_TAG = "identity"
IDENTITY_RE = re.compile(r"^[0-9a-f]{8,64}$")
SERVED_PREFIX = "served."  # registered-model tag served.<namespace>.<release>.<revision> = version
SERVED_KEEP = 100  # revisions remembered per release (Helm keeps 10 by default)
POLL_S = 5.0


class TrainingFailed(HousingError):
    """The training this promotion waits for has failed: waiting longer, or retrying, cannot help."""

    exit_code = 4


def check_identity(identity: str | None) -> str | None:
    if identity is not None and not IDENTITY_RE.match(identity):
        raise ConfigError(f"training identity must be 8-64 lowercase hex characters, got {identity!r}")
    return identity


def trained(name: str, identity: str):
    """The newest READY version trained with ``identity``, or None."""
    found = registry.client().search_model_versions(f"name='{name}' and tags.{IDENTITY_TAG}='{identity}'")
    ready = [v for v in found if v.status == "READY"]
    return max(ready, key=lambda v: int(v.version)) if ready else None


def failed_training(identity: str, experiment: str | None = None) -> str | None:
    """Why the newest training run of ``identity`` failed, if its newest run did (None: none failed)."""
    client = registry.client()
    names = [experiment] if experiment else None
    experiments = (
        [e for e in (client.get_experiment_by_name(n) for n in names) if e]
        if names
        else client.search_experiments()
    )
    if not experiments:
        return None
    runs = client.search_runs(
        [e.experiment_id for e in experiments],
        filter_string=f"tags.{IDENTITY_TAG} = '{identity}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs and runs[0].info.status == "FAILED":
        return runs[0].data.tags.get("error", f"run {runs[0].info.run_id} FAILED")
    return None


def wait_for_training(
    name: str,
    identity: str,
    timeout: float,
    *,
    job_failure: Callable[[], str | None] | None = None,
    experiment: str | None = None,
):
    """The version trained with ``identity``, waiting for it; raises TrainingFailed as soon as the training did."""
    deadline = time.monotonic() + timeout
    while True:
        version = trained(name, identity)
        if version is not None:
            return version
        why = failed_training(identity, experiment)
        if why is None and job_failure is not None:
            why = job_failure()
        if why is not None:
            raise TrainingFailed(f"the training of identity {identity} failed: {why}")
        if time.monotonic() >= deadline:
            raise NotFound(f"no version of {name!r} with identity {identity} after {timeout:g}s")
        log.info("waiting for the training of identity %s to register a version", identity)
        time.sleep(min(POLL_S, max(0.5, deadline - time.monotonic())))


def check_release(release: str | None) -> str | None:
    """``release`` (--release, HOUSING_RELEASE) if it is <namespace>/<name>; checked before anything moves."""
    if release is not None and not re.fullmatch(r"[a-z0-9.-]+/[a-z0-9.-]+", release):
        raise ConfigError(f"release must be <namespace>/<name> (lowercase DNS names), got {release!r}")
    return release


def _served_key(release: str, revision: int) -> str:
    check_release(release)
    if revision < 1:
        raise ConfigError(f"revision must be >= 1, got {revision}")
    namespace, rel = release.split("/")
    return f"{SERVED_PREFIX}{namespace}.{rel}.{revision}"


def record_served(name: str, release: str, revision: int, version: str) -> None:
    """Remember that ``release`` at ``revision`` serves ``version`` (and forget revisions long gone)."""
    client = registry.client()
    key = _served_key(release, revision)
    registry.set_model_tag(name, key, version)
    prefix = key.rsplit(".", 1)[0] + "."
    tags = client.get_registered_model(name).tags
    for old in [k for k in tags if k.startswith(prefix) and k[len(prefix) :].isdigit()]:
        if int(old[len(prefix) :]) <= revision - SERVED_KEEP:
            client.delete_registered_model_tag(name, old)
    log.info("revision %d of %s serves %s version %s", revision, release, name, version)


def served_at(name: str, release: str, revision: int) -> str | None:
    return registry.client().get_registered_model(name).tags.get(_served_key(release, revision))


def bootstrap_needed(name: str, alias: str) -> bool:
    """True while the alias does not exist: the first model of a release (install, or a retried install)."""
    try:
        holder = registry.get_version(name, alias=alias)
    except NotFound:
        return True
    log.info(
        "@%s already holds version %s: not a bootstrap, the promotion hook decides", alias, holder.version
    )
    return False


def rollback_target(name: str, alias: str, release: str, revision: int, identity: str | None) -> str | None:
    """The version a rollback to ``revision`` restores: what it recorded serving; else (a revision from before
    this record, or whose hook never finished) its identity's version if that passed the gate; else None."""
    version = served_at(name, release, revision)
    if version is not None:
        return version
    if identity:
        candidate = trained(name, identity)
        if candidate is not None and candidate.tags.get(f"gate.{alias}", "").startswith("passed"):
            log.info(
                "no record for revision %d; its training (version %s) passed the gate",
                revision,
                candidate.version,
            )
            return str(candidate.version)
    return None
