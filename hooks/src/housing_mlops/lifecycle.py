"""The model lifecycle: from observed facts, decide which version is served, and reconcile the served state to it.

The alias (MLflow) is the decision; the InferenceService's pin (an exact version in its storageUri) is the state;
`reconcile_once` moves the state to the decision, and nothing else writes the pin. Who decides, and when
(docs/chart.md has the table, docs/architecture.md maps each rule to its file):

- **A Helm revision** (the promotion hook) decides only when its training identity differs from the identity
  this install last deployed (`decide`): an upgrade that changes nothing the model depends on moves nothing,
  so an alias moved by a scheduled retrain or by a person is respected until something new is decided.
  A new identity's version goes through the gate (gate.py) against the champion, whoever put it there.
- **A rollback** restores exactly the version its target revision recorded serving (no training, no gate); a
  version that no longer exists fails the hook (exit 6) and changes nothing served.
- **Helm and the cluster agree**: a hook acts only while Helm's record of its revision still says Helm is
  deploying it, for this install; checked before and after it moves the alias (exit 5 otherwise, nothing moved).
- **Records are per install**: every record is keyed by the install (Helm's first-deployed time), so a
  reinstall of the same name never uses, nor is confused by, a previous install's records.
- **The bootstrap**: the training pod promotes its own version only while the alias does not exist yet.
- **Fail fast**: a promotion waiting for its training stops once it failed (exit 4), or once Helm gave up.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from . import kube, registry
from .errors import ConfigError, Gone, NotFound, Superseded, TrainingFailed

log = logging.getLogger(__name__)

IDENTITY_TAG = "identity"
IDENTITY_RE = re.compile(r"^[0-9a-f]{8,64}$")
RECORD_PREFIX = "release."  # registered-model tags release.<namespace>.<release>.<install>.<what>
SERVED_KEEP = 100  # revisions remembered per install (Helm keeps 10 by default)
POLL_S = 5.0
OUTSIDE = "outside"  # who moved the alias when none of our jobs did: a person (MLflow UI, API, CLI)


def check_identity(identity: str | None) -> str | None:
    if identity is not None and not IDENTITY_RE.match(identity):
        raise ConfigError(f"training identity must be 8-64 lowercase hex characters, got {identity!r}")
    return identity


def check_release(release: str | None) -> str | None:
    """``release`` (--release, HOUSING_RELEASE) if it is <namespace>/<name>; checked before anything moves."""
    if release is not None and not re.fullmatch(r"[a-z0-9.-]+/[a-z0-9.-]+", release):
        raise ConfigError(f"release must be <namespace>/<name> (lowercase DNS names), got {release!r}")
    return release


# --- facts ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    """One Helm revision of one install of a release."""

    namespace: str
    release: str
    revision: int
    install: str  # kube.install_key: differs between two installs of the same name

    @classmethod
    def parse(cls, release: str, revision: int, install: str) -> Revision:
        check_release(release)
        kube.check_install_key(install)
        if revision < 1:
            raise ConfigError(f"revision must be >= 1, got {revision}")
        namespace, name = release.split("/")
        return cls(namespace, name, revision, install)

    def key(self, what: str) -> str:
        return f"{RECORD_PREFIX}{self.namespace}.{self.release}.{self.install}.{what}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.release} revision {self.revision}"


def holder(name: str, alias: str) -> str | None:
    try:
        return str(registry.get_version(name, alias=alias).version)
    except NotFound:
        return None


def trained(name: str, identity: str):
    """The newest READY version trained with ``identity``, or None."""
    found = registry.steady(
        lambda: registry.client().search_model_versions(
            f"name='{name}' and tags.{IDENTITY_TAG}='{identity}'"
        ),
        f"MLflow: versions of {name!r}",
    )
    ready = [v for v in found if v.status == "READY"]
    return max(ready, key=lambda v: int(v.version)) if ready else None


def failed_training(identity: str, experiment: str | None = None) -> str | None:
    """Why the newest training run of ``identity`` failed, if its newest run did (None: none failed)."""
    client = registry.client()
    experiments = (
        [e for e in [client.get_experiment_by_name(experiment)] if e]
        if experiment
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
    guard: Callable[[], None] | None = None,
):
    """The version trained with ``identity``, waiting for it; raises TrainingFailed as soon as the training did,
    and whatever ``guard`` raises (Superseded: Helm gave up on the revision) as soon as it does."""
    deadline = time.monotonic() + timeout
    while True:
        if (
            guard is not None
        ):  # first: once the release is gone, so is its MLflow (whose client retries for minutes)
            guard()
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


def decided_identity(name: str, at: Revision) -> str | None:
    """The training identity this install last deployed (None: nothing yet, e.g. its first revision)."""
    return registry.model_tags(name).get(at.key("identity"))


def served_at(name: str, at: Revision, revision: int) -> str | None:
    return registry.model_tags(name).get(at.key(f"served.{revision}"))


def record(name: str, at: Revision, served: str | None, identity: str | None) -> None:
    """Remember what ``at`` serves and (when the alias holds its model) the identity it deployed."""
    if served is None and identity is None:
        return  # nothing to remember (e.g. no model, no alias yet)
    client = registry.client()
    if served is not None:
        registry.set_model_tag(name, at.key(f"served.{at.revision}"), served)
    if identity is not None:
        registry.set_model_tag(name, at.key("identity"), identity)
    prefix = at.key("served.")
    for old in [k for k in registry.model_tags(name) if k.startswith(prefix)]:
        tail = old[len(prefix) :]
        if tail.isdigit() and int(tail) <= at.revision - SERVED_KEEP:
            client.delete_registered_model_tag(name, old)
    log.info("%s serves %s version %s (identity %s)", at, name, served, identity or "unchanged")


# --- who moved the alias -------------------------------------------------------------------------------------


def _moved_key(alias: str) -> str:
    return f"alias.{alias}.moved"


def record_move(name: str, alias: str, version: str, by: str) -> None:
    """Our jobs say who moved the alias (MLflow does not record it): `<version> <by>`."""
    registry.set_model_tag(name, _moved_key(alias), f"{version} {by}")


def moved_by(name: str, alias: str, version: str) -> str:
    """Who put ``version`` on the alias: what our job recorded when it moved it, else OUTSIDE (a person)."""
    raw = registry.model_tags(name).get(_moved_key(alias), "")
    recorded, _, by = raw.partition(" ")
    return by if recorded == version and by else OUTSIDE


# --- decisions -----------------------------------------------------------------------------------------------


class Action(Enum):
    KEEP = "kept"  # the release's model did not change, or was decided before: move nothing
    WAIT = "wait"  # the candidate is not known yet: wait for the training, then decide again
    ALREADY = "already"  # the candidate holds the alias
    GATE = "gate"  # judge the candidate against the champion; promote it if it passes


@dataclass(frozen=True)
class Facts:
    """What the promotion hook of a revision observed."""

    identity: str  # the revision's training identity
    decided: str | None  # the identity this install last deployed (None: its first revision)
    holder: str | None  # the version holding the alias (None: no alias)
    candidate: str | None = None  # the identity's version (None: not looked up yet)
    judged: bool = False  # the candidate carries a gate verdict already


def decide(f: Facts) -> Action:
    """What a Helm revision does about the alias (docs/chart.md's table, rows install/upgrade/reinstall)."""
    if f.identity == f.decided:
        return Action.KEEP  # nothing the model depends on changed: the alias is respected, whoever moved it
    if f.candidate is None:
        return Action.WAIT
    if f.candidate == f.holder:
        return Action.ALREADY
    if f.holder is not None and f.decided is None and f.judged:
        return Action.KEEP  # a reinstall finds its version decided before: the registry's champion stays
    return Action.GATE


def promote_revision(
    *,
    name: str,
    alias: str,
    at: Revision,
    identity: str,
    promote: Callable[[str], tuple[str, str]],
    wait_timeout: float,
    job_failure: Callable[[], str | None] | None = None,
    guard: Callable[[], None] | None = None,
    settle: Callable[[str], None] | None = None,
) -> tuple[str, str | None]:
    """The promotion hook of revision ``at``: decide, act, record, then ``settle`` (wait until the version the alias
    holds is pinned). Returns (outcome, version the alias holds).

    ``promote(version)`` gates and moves the alias (promote.promote); it raises GateRejected, which is recorded
    (this revision serves the champion) and re-raised. ``guard`` (Helm still deploys this revision) is checked
    while waiting, before acting and once more at the very end: a move Helm gave up on meanwhile (it timed out while
    the hook waited for the pin) is undone, the alias put back on the version it held, and Superseded raised.
    """
    from .errors import GateRejected

    facts = Facts(identity, decided_identity(name, at), holder(name, alias))
    action = decide(facts)
    if action is Action.WAIT:
        candidate = wait_for_training(name, identity, wait_timeout, job_failure=job_failure, guard=guard)
        facts = Facts(
            identity,
            facts.decided,
            holder(name, alias),
            str(candidate.version),
            f"gate.{alias}" in candidate.tags,
        )
        action = decide(facts)
    log.info("%s: %s (identity %s, deployed before %s, @%s holds %s, candidate %s)",
             at, action.value, identity, facts.decided, alias, facts.holder, facts.candidate)  # fmt: skip
    if guard is not None:
        guard()
    if action is Action.KEEP:
        outcome, now = action.value, facts.holder
        record(name, at, now, identity if facts.decided else None)
    elif action is Action.ALREADY:
        outcome, now = action.value, facts.candidate
        record(name, at, now, identity)
    else:
        assert facts.candidate is not None
        try:
            outcome, now = promote(facts.candidate)
        except GateRejected:
            record(name, at, holder(name, alias), None)  # this revision keeps serving the champion
            raise
        record(name, at, now, identity if now == facts.candidate else None)
    if settle is not None and now is not None:
        settle(now)
    if guard is not None:
        try:
            guard()
        except Superseded:
            if now != facts.holder and facts.holder is not None:
                _undo(name, alias, facts.holder, now, at)
            raise
    return outcome, now


def _undo(name: str, alias: str, before: str, moved_to: str | None, at: Revision) -> None:
    """Put the alias back on ``before``: Helm gave up on ``at`` after its hook had moved it."""
    from .promote import restore

    restore(
        name=name,
        alias=alias,
        version=before,
        by=f"helm-superseded:{at.namespace}/{at.release}@{at.revision}",
    )
    log.warning(
        "%s: Helm gave up after version %s was promoted; @%s put back on version %s",
        at,
        moved_to,
        alias,
        before,
    )


def rollback_target(name: str, alias: str, at: Revision, target: int, identity: str | None) -> str | None:
    """The version a rollback to revision ``target`` restores: what it recorded serving; else (a revision whose
    hook never finished) its identity's version if that passed the gate; else None (nothing to restore)."""
    version = served_at(name, at, target)
    if version is not None:
        return version
    if identity:
        candidate = trained(name, identity)
        if candidate is not None and candidate.tags.get(f"gate.{alias}", "").startswith("passed"):
            log.info(
                "no record for revision %d; its training (version %s) passed the gate",
                target,
                candidate.version,
            )
            return str(candidate.version)
    return None


def check_restorable(name: str, version: str, why: str) -> None:
    """Raise Gone unless ``version`` exists and still has its model files."""
    try:
        registry.get_version(name, version=version)
    except NotFound as exc:
        raise Gone(
            f"{why}: version {version} of {name!r} no longer exists in MLflow; nothing changed"
        ) from exc
    if not registry.model_files_present(name, version):
        raise Gone(
            f"{why}: the artifacts of {name!r} version {version} ({registry.physical_uri(name, version)}) are gone; "
            "nothing changed"
        )


def bootstrap_needed(name: str, alias: str) -> bool:
    """True while the alias does not exist: the first model of a release (install, or a retried install)."""
    current = holder(name, alias)
    if current is None:
        return True
    log.info("@%s already holds version %s: not a bootstrap, the promotion hook decides", alias, current)
    return False


# --- Helm's record -------------------------------------------------------------------------------------------


def helm_guard(ns: str, release: str, revision: int, install: str) -> Callable[[], None]:
    """A check that raises Superseded unless Helm is still deploying ``revision`` of this install."""

    def check() -> None:
        found = kube.helm_record(ns, release, revision)
        if found is None or found.install != install or found.status not in kube.DEPLOYING:
            state = (
                "gone" if found is None else "another install" if found.install != install else found.status
            )
            raise Superseded(
                f"Helm is no longer deploying revision {revision} of {ns}/{release} ({state}): "
                "this hook's outcome is not applied"
            )

    return check


# --- reconcile: the served state follows the decision ----------------------------------------------------------


def pinned_uri(prefix: str, name: str) -> str:
    """The storageUri the chart renders in alias mode: mlflow://<its MLflow>/<model>/pinned (the version: the pin)."""
    return f"{prefix.rstrip('/')}/{name}/pinned"


def reconcile_once(name: str, alias: str, isvc: str, ns: str | None, prefix: str) -> str:
    """Pin the InferenceService to the version the alias holds, if it is not already. Returns what it did.

    The pin changes only here; a missing alias leaves the pin alone, and a version that is gone (deleted, or its
    artifacts) is never pinned (Gone): the predictor keeps serving what it serves. An InferenceService whose
    storageUri is not this release's pinned URI (the chart's pinned mode, or edited by hand) is refused: its pods
    would not fetch the pin."""
    wanted = holder(name, alias)
    if wanted is None:
        return f"@{alias} does not exist: pin unchanged"
    current = kube.pinned(isvc, ns)
    expected = pinned_uri(prefix, name)
    if current.uri != expected:
        raise ConfigError(
            f"InferenceService {isvc} has storageUri {current.uri!r}, not {expected!r}: its pods would not fetch the "
            "pinned version (inference.model.uriMode=alias renders it)"
        )
    if current.version == wanted:
        return f"in sync: version {wanted}"
    check_restorable(name, wanted, f"@{alias} names version {wanted}")
    by = moved_by(name, alias, wanted)
    if by == OUTSIDE:
        record_move(name, alias, wanted, OUTSIDE)
    kube.pin(isvc, ns, wanted)
    return f"pinned version {wanted} (was {current.version}; @{alias} moved by {by})"


def wait_pinned(isvc: str, ns: str | None, version: str, timeout: float) -> None:
    """Wait until the reconciler has pinned ``version`` (the hook then knows the rollout has started). An
    InferenceService that serves a given URI (the chart's pinned mode: no `…/pinned` storageUri, no reconciler)
    is not waited for."""
    deadline = time.monotonic() + timeout
    while (current := kube.pinned(isvc, ns)).version != version:
        if not (current.uri or "").endswith("/pinned"):
            log.info("InferenceService %s serves %s as given: no pin to wait for", isvc, current.uri)
            return
        if time.monotonic() >= deadline:
            raise NotFound(
                f"InferenceService {isvc} is still pinned to version {current.version} after {timeout:g}s, not "
                f"{version}: is the reconciler running? (kubectl logs deploy/<release>-reconciler)"
            )
        time.sleep(1.0)
