"""`housing-mlops promote` (quality gate, then the alias) and `housing-mlops rollback`."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from . import gate as gating
from . import registry
from .errors import GateRejected, HousingError, NotFound
from .gate import Gate
from .lifecycle import record_move

log = logging.getLogger(__name__)

HISTORY_KEEP = 50
# MLflow has no compare-and-set on aliases: after moving one we re-read it and settle races this many rounds.
SETTLE_ROUNDS = 5
# Promotions and rollbacks of one alias take turns through a lease (a registered-model tag; see `alias_lease`).
LEASE_TTL_S = 60.0  # a crashed holder blocks the alias this long at most; a promotion holds it for seconds
LEASE_SETTLE_S = 1.0  # between writing our lease and reading it back: >> one MLflow request
_held: set[tuple[str, str]] = set()  # leases this process holds (re-entrant: a nested call does not wait)


def _history_key(alias: str) -> str:
    return f"alias.{alias}.history"


def _history(name: str, alias: str) -> list[str]:
    tags = registry.client().get_registered_model(name).tags
    raw = tags.get(_history_key(alias), "")
    return [v for v in raw.split(",") if v]


def _set_history(name: str, alias: str, versions: list[str]) -> None:
    registry.set_model_tag(name, _history_key(alias), ",".join(versions[-HISTORY_KEEP:]))


def _remember(name: str, alias: str, holder: str, drop: str | None = None) -> None:
    """Make the history end with ``holder`` (the version holding the alias), without ``drop`` (a loser)."""
    before = _history(name, alias)
    history = [v for v in before if v != drop]
    while history and history[-1] == holder:
        history.pop()
    if [*history, holder] != before:
        _set_history(name, alias, [*history, holder])


def _lease_key(alias: str) -> str:
    return f"alias.{alias}.lease"


def _read_lease(name: str, alias: str) -> tuple[str, float] | None:
    raw = registry.client().get_registered_model(name).tags.get(_lease_key(alias), "")
    token, _, expiry = raw.rpartition(" ")
    try:
        return (token, float(expiry)) if token else None
    except ValueError:
        return None  # not ours to interpret: treated as free, and overwritten


@contextmanager
def alias_lease(name: str, alias: str, timeout: float) -> Iterator[None]:
    """Hold the alias' lease while judging and moving it, so concurrent promotions of it take turns.

    MLflow has no compare-and-set, so this is Fischer's protocol on a registered-model tag: when the lease is
    free (absent or expired), write our token, wait LEASE_SETTLE_S, read it back; whoever wrote last holds it,
    the others wait. That holds as long as reading "free" and writing take less than LEASE_SETTLE_S (one
    request each). The lease expires after LEASE_TTL_S, so a crashed job does not block the alias for long.
    `_settle` still re-reads the alias after moving it: the lease is the first line, not the only one.
    """
    key = (name, alias)
    if key in _held:  # re-entrant within this process
        yield
        return
    client = registry.client()
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + max(timeout, 2 * LEASE_TTL_S)
    while True:
        lease = _read_lease(name, alias)
        if lease is None or lease[1] < time.time():
            registry.set_model_tag(name, _lease_key(alias), f"{token} {time.time() + LEASE_TTL_S:.3f}")
            time.sleep(LEASE_SETTLE_S)
            lease = _read_lease(name, alias)
            if lease is not None and lease[0] == token:
                break
        if time.monotonic() >= deadline:
            holder = lease[0] if lease else "?"
            raise HousingError(
                f"@{alias} of {name!r} is being changed by {holder}: gave up waiting; retry later"
            )
        log.info(
            "@%s is being changed by %s: waiting for its turn", alias, lease[0] if lease else "another job"
        )
        time.sleep(0.5)
    _held.add(key)
    try:
        yield
    finally:
        _held.discard(key)
        try:
            lease = _read_lease(name, alias)
            if lease is not None and lease[0] == token:
                client.delete_registered_model_tag(name, _lease_key(alias))
        except Exception as exc:  # the lease expires on its own
            log.warning("could not release the lease on @%s (%s); it expires in %gs", alias, exc, LEASE_TTL_S)


def _settle(name: str, alias: str, candidate, score: float, gate: Gate) -> str:
    """After moving the alias: re-read it, and if a concurrent promotion moved it since, keep the preferred of
    the two (`gate.prefer`: the newer dataset, else the better metric on the same held-out rows; the loser steps
    back). Returns the version holding the alias when the dust has settled."""
    del score  # the logged metric: `prefer` re-scores
    client = registry.client()
    for _ in range(SETTLE_ROUNDS):
        holder = registry.get_version(name, alias=alias)
        if holder.version == candidate.version:
            _remember(name, alias, candidate.version)
            return candidate.version
        ours_wins, why = gating.prefer(name, candidate, holder, gate)
        if not ours_wins:
            log.warning(
                "@%s was moved to version %s while promoting version %s (%s): keeping %s",
                alias, holder.version, candidate.version, why, holder.version,
            )  # fmt: skip
            _remember(name, alias, holder.version, drop=candidate.version)
            if registry.get_version(name, alias=alias).version == holder.version:
                return holder.version
            continue
        log.warning(
            "@%s was moved to version %s while promoting version %s (%s): taking it back",
            alias, holder.version, candidate.version, why,
        )  # fmt: skip
        client.set_registered_model_alias(name, alias, candidate.version)
    holder = registry.get_version(name, alias=alias).version
    raise HousingError(
        f"@{alias} kept moving while promoting version {candidate.version} (now version {holder}): "
        "another promotion is running; retry when it has finished"
    )


def find_candidate(
    name: str,
    version: str | None,
    trigger: str | None,
    wait_timeout: float,
    identity: str | None = None,
    job_failure=None,
):
    """The version to judge: explicit, else the one trained with ``identity`` or tagged with ``trigger`` (waiting
    for it; an identity's failed training ends the wait at once), else the latest."""
    client = registry.client()
    if version:
        return registry.get_version(name, version=version)
    if identity:
        from . import lifecycle

        return lifecycle.wait_for_training(name, identity, wait_timeout, job_failure=job_failure)
    if trigger:
        deadline = time.monotonic() + wait_timeout
        while True:
            found = client.search_model_versions(f"name='{name}' and tags.trigger='{trigger}'")
            if found:
                return max(found, key=lambda v: int(v.version))
            if time.monotonic() >= deadline:
                raise NotFound(f"no version of {name!r} tagged trigger={trigger!r} after {wait_timeout:g}s")
            log.info("waiting for training to register a version with trigger=%s", trigger)
            time.sleep(min(10.0, max(0.5, deadline - time.monotonic())))
    registry.get_version(name, version="1")  # NotFound with a clear message if the model is empty
    versions = client.search_model_versions(f"name='{name}'")
    return max(versions, key=lambda v: int(v.version))


def _metric(version, metric: str) -> float:
    """The metric the version's training run logged about itself (the gate re-scores; see gate.py)."""
    return gating._logged(version, metric)


def _dataset(version) -> str:
    return gating._dataset(version)


def promote(
    *,
    name: str,
    alias: str,
    version: str | None,
    trigger: str | None,
    gate: Gate,
    wait_timeout: float,
    identity: str | None = None,
    job_failure=None,
    by: str = "cli",
    guard: Callable[[], None] | None = None,
) -> tuple[str, str]:
    """Judge the candidate and move ``alias`` if it passes. Returns (outcome, version); raises GateRejected.

    Outcomes: "promoted", "already" (it holds the alias), "superseded" (it passed, but a concurrent promotion
    moved the alias to a better version, which is returned). ``by`` is recorded as who moved the alias;
    ``guard`` (Helm still deploys the hook's revision) is checked right before and after the move, which is
    undone if it fails after.
    """
    candidate = find_candidate(name, version, trigger, wait_timeout, identity, job_failure)
    if candidate.status != "READY":
        raise HousingError(f"version {candidate.version} is {candidate.status}, not READY")
    score = _metric(candidate, gate.metric)
    with alias_lease(name, alias, wait_timeout):
        return _promote(name, alias, candidate, score, gate, by, guard)


def _promote(
    name: str, alias: str, candidate, score: float, gate: Gate, by: str, guard: Callable[[], None] | None
) -> tuple[str, str]:
    for _ in range(SETTLE_ROUNDS):
        champion = _holder(name, alias)
        if champion is not None and champion.version == candidate.version:
            log.info("version %s already holds @%s", candidate.version, alias)
            return "already", candidate.version
        reason = _judge(name, alias, candidate, score, champion, gate)
        # No compare-and-set in MLflow: if the alias moved while we judged, judge again against the new holder.
        now = _holder(name, alias)
        if (now and now.version) != (champion and champion.version):
            log.warning(
                "@%s moved to version %s while judging version %s: judging again",
                alias, now and now.version, candidate.version,
            )  # fmt: skip
            continue
        return _move(name, alias, candidate, score, champion, gate, reason, by, guard)
    raise HousingError(f"@{alias} kept moving while promoting version {candidate.version}: retry later")


def _holder(name: str, alias: str):
    try:
        return registry.get_version(name, alias=alias)
    except NotFound:
        return None


def _judge(name: str, alias: str, candidate, score: float, champion, gate: Gate) -> str:
    """The gate's verdict (`gate.judge`: both re-scored on the candidate's held-out set), recorded on the
    candidate with the two scores; raises GateRejected. ``score`` (the logged metric) is not what is judged."""
    del score
    verdict = gating.judge(name, alias, candidate, champion, gate)
    text = ("passed: " if verdict.passed else "rejected: ") + verdict.reason
    registry.set_model_tag(name, f"gate.{alias}", text, version=candidate.version)
    for key, value in (
        ("candidate_score", verdict.candidate_score),
        ("champion_score", verdict.champion_score),
    ):
        shown = "none" if value is None else repr(value)
        registry.set_model_tag(name, f"gate.{alias}.{key}", shown, version=candidate.version)
    if not verdict.passed:
        raise GateRejected(f"version {candidate.version} rejected for @{alias}: {verdict.reason}")
    return verdict.reason


def _move(
    name: str,
    alias: str,
    candidate,
    score: float,
    champion,
    gate: Gate,
    reason: str,
    by: str,
    guard: Callable[[], None] | None,
) -> tuple[str, str]:
    client = registry.client()
    if guard is not None:
        guard()
    history = _history(name, alias)
    if champion is not None and (not history or history[-1] != champion.version):
        history.append(champion.version)  # e.g. an alias set by hand before the first promotion
    # History first, alias second: a crash in between leaves the old alias and a harmless extra entry.
    _set_history(name, alias, [*history, candidate.version])
    if champion is not None:
        registry.set_model_tag(name, "previous_champion", champion.version, version=candidate.version)
    record_move(name, alias, candidate.version, by)
    client.set_registered_model_alias(name, alias, candidate.version)
    if guard is not None:
        try:
            guard()
        except HousingError:  # Helm gave up between the check and the move: undo it, then say so
            if champion is not None:
                record_move(name, alias, champion.version, by)
                client.set_registered_model_alias(name, alias, champion.version)
            else:
                client.delete_registered_model_alias(name, alias)
            _set_history(name, alias, history)
            log.warning("Helm gave up while version %s was promoted: @%s put back on %s", candidate.version, alias,
                        champion and champion.version)  # fmt: skip
            raise
    holder = _settle(name, alias, candidate, score, gate)
    if holder != candidate.version:
        return "superseded", holder
    log.info("version %s promoted to @%s: %s", candidate.version, alias, reason)
    return "promoted", candidate.version


def rollback(*, name: str, alias: str, wait_timeout: float = 120.0) -> tuple[str, str]:
    """Point ``alias`` back at the previous champion. Returns (from_version, to_version)."""
    with alias_lease(name, alias, wait_timeout):
        return _rollback(name, alias)


def _rollback(name: str, alias: str) -> tuple[str, str]:
    client = registry.client()
    current = registry.get_version(name, alias=alias)
    history = _history(name, alias)
    while history and history[-1] == current.version:
        history.pop()
    if not history:
        raise NotFound(f"@{alias} of {name!r} has no previous champion to roll back to")
    previous = history[-1]
    registry.get_version(name, version=previous)  # still exists?
    record_move(name, alias, previous, "cli-rollback")
    client.set_registered_model_alias(name, alias, previous)
    _set_history(name, alias, history)
    registry.set_model_tag(name, f"rolled_back.{alias}", "true", version=current.version)
    log.info("@%s rolled back from version %s to %s", alias, current.version, previous)
    return current.version, previous


def restore(
    *, name: str, alias: str, version: str, wait_timeout: float = 120.0, by: str = "cli"
) -> tuple[str | None, str]:
    """Put ``alias`` on ``version`` (a `helm rollback` to the revision that served it): no gate, it was gated
    when it was promoted. Returns (from_version or None, version)."""
    registry.get_version(name, version=version)  # NotFound with a clear message if it was deleted
    with alias_lease(name, alias, wait_timeout):
        client = registry.client()
        current = _holder(name, alias)
        if current is not None and current.version == version:
            log.info("@%s already holds version %s: nothing to restore", alias, version)
            return version, version
        history = _history(name, alias)
        if current is not None and (not history or history[-1] != current.version):
            history.append(current.version)
        _set_history(name, alias, [*[v for v in history if v != version], version])
        record_move(name, alias, version, by)
        client.set_registered_model_alias(name, alias, version)
        if current is not None:
            registry.set_model_tag(name, f"rolled_back.{alias}", "true", version=current.version)
        log.info("@%s restored from version %s to %s", alias, current and current.version, version)
        return (current.version if current else None), version
