"""The lifecycle model (lifecycle.py): `decide` row by row, then the release story against the real local MLflow as
the chart's Jobs and hooks drive it (through the CLI, records kept per install).

One registered model of its own, so the other pipeline tests' versions and aliases are untouched. The Helm story
of one install: install (revision 1), a scheduled retrain moves the alias, a values-only upgrade (2) respects it,
a person moves it back, another values-only upgrade (3) respects that too, a new identity promoted (4), a bad one
rejected (5), `helm rollback 2` and `helm rollback 4`, a rollback to a revision whose version was deleted, then a
second install of the same name that never sees the first one's records.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fake_kube
import pytest
from housing_mlops import kube, lifecycle, registry
from housing_mlops.errors import Superseded
from housing_mlops.lifecycle import Action, Facts, decide
from housing_mlops.promote import Gate
from housing_mlops.promote import promote as gate_and_move
from mlflow import MlflowClient

MODEL = "lifecycle-model"
RELEASE = "ml/housing"
FIRST = "2026-12-05T07:00:00.123456789Z"  # Helm's info.first_deployed of the first install
AGAIN = "2026-12-05T09:30:00.5Z"  # ... of the second install of the same name
I1, I2 = kube.install_key(FIRST), kube.install_key(AGAIN)
ID_A, ID_B, ID_C, ID_D, ID_FAILED = "a" * 16, "b" * 16, "c" * 16, "d" * 16, "f" * 16


# --- decide: docs/chart.md's lifecycle table, row by row --------------------------------------------------------

A, B, C = ID_A, ID_B, ID_C
DECIDE_ROWS = [
    # (row, Facts(identity, decided, holder, candidate, judged), Action)
    ("install: hook before its training registered", Facts(A, None, None), Action.WAIT),
    ("install: the bootstrap promoted the identity's version", Facts(A, None, "1", "1"), Action.ALREADY),
    ("install: trained, no alias (the bootstrap did not run)", Facts(A, None, None, "1"), Action.GATE),
    ("values-only upgrade", Facts(A, A, "1"), Action.KEEP),
    ("upgrade of the training pod only: a new Job reuses the version", Facts(A, A, "1", "1", True), Action.KEEP),
    ("values-only upgrade after a scheduled retrain moved the alias", Facts(A, A, "2"), Action.KEEP),
    ("values-only upgrade after a person moved the alias", Facts(A, A, "7", "1", True), Action.KEEP),
    ("values-only upgrade after a person deleted the alias", Facts(A, A, None), Action.KEEP),
    ("upgrade with a new identity, before its training registered", Facts(B, A, "1"), Action.WAIT),
    ("upgrade with a new identity, its version trained", Facts(B, A, "1", "2"), Action.GATE),
    ("upgrade with a new identity whose version already holds the alias", Facts(B, A, "2", "2", True), Action.ALREADY),
    ("upgrade again with an identity rejected before (judged again)", Facts(C, B, "2", "3", True), Action.GATE),
    ("helm rollback's target identity as an upgrade again", Facts(A, B, "2", "1", True), Action.GATE),
    ("failed first install retried with a new identity (no alias)", Facts(B, None, None, "2"), Action.GATE),
    ("reinstall: its identity's version was judged before, the champion is another", Facts(A, None, "3", "1", True), Action.KEEP),
    ("reinstall: its identity's version holds the alias", Facts(A, None, "1", "1", True), Action.ALREADY),
    ("reinstall with a new identity (never judged)", Facts(C, None, "3", "4"), Action.GATE),
    ("reinstall with a new identity, before its training registered", Facts(C, None, "3"), Action.WAIT),
    ("reinstall after the alias was deleted: gate even a judged version", Facts(A, None, None, "1", True), Action.GATE),
]  # fmt: skip


@pytest.mark.parametrize(("facts", "action"), [r[1:] for r in DECIDE_ROWS], ids=[r[0] for r in DECIDE_ROWS])
def test_decide(facts: Facts, action: Action) -> None:
    assert decide(facts) is action


def test_decide_only_waits_for_what_it_does_not_know() -> None:
    """WAIT is the only answer that needs the candidate, and it never comes back once the candidate is known."""
    for _, facts, action in DECIDE_ROWS:
        if facts.candidate is not None:
            assert action is not Action.WAIT
        elif action is not Action.WAIT:
            assert action is Action.KEEP and facts.identity == facts.decided


# --- the release story against MLflow ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(stack, dvc_repo: Path, pushed: str):
    """train(identity, max_iter, depth) through the CLI, returning (exit code, stdout, stderr)."""

    def run(cli, identity: str, max_iter: int = 20, depth: int = 8, data: str | None = None):
        return cli(
            "train", "--model-name", MODEL, "--repo", str(dvc_repo), "--data", data or pushed,
            "--identity", identity, "--max-iter", str(max_iter), "--max-depth", str(depth),
        )  # fmt: skip

    return run


@pytest.fixture(scope="module")
def retrained(stack, dvc_repo: Path, pushed: str):
    """What the retrain CronJob runs: `train --trigger <its pod>` (no identity), then `promote --trigger`."""

    def run(cli, trigger: str, max_iter: int):
        code, out, err = cli(
            "train", "--model-name", MODEL, "--repo", str(dvc_repo), "--data", pushed, "--trigger", trigger,
            "--max-iter", str(max_iter),
        )  # fmt: skip
        assert code == 0, err
        version = out.split("version=")[1].split()[0]
        code, out, err = cli(
            "promote", "--model-name", MODEL, "--trigger", trigger, "--max-regression-pct", "5"
        )
        assert code == 0 and out.startswith("promoted:"), out + err
        return version

    return run


def version_of(out: str) -> str:
    return out.split("version=")[1].split()[0]


def _versions() -> list[tuple[str, str]]:
    found = MlflowClient().search_model_versions(f"name='{MODEL}'")
    return sorted((v.version, v.tags.get("identity", "")) for v in found)


def _alias() -> str:
    return MlflowClient().get_model_version_by_alias(MODEL, "production").version


def _tags() -> dict[str, str]:
    return MlflowClient().get_registered_model(MODEL).tags


def _records(install: str, release: str = "ml.housing") -> dict[str, str]:
    prefix = f"release.{release}.{install}."
    return {k[len(prefix) :]: v for k, v in _tags().items() if k.startswith(prefix)}


def _promote(cli, identity: str, revision: int, *extra: str, install: str = I1):
    return cli(
        "promote", "--model-name", MODEL, "--identity", identity, "--release", RELEASE,
        "--revision", str(revision), "--install-id", install, *extra,
    )  # fmt: skip


def _rollback(cli, revision: int, *extra: str, install: str = I1):
    return cli(
        "rollback", "--model-name", MODEL, "--release", RELEASE, "--revision", str(revision),
        "--install-id", install, *extra,
    )  # fmt: skip


def test_the_release_story(cli, trained, retrained) -> None:
    # install: train identity A, bootstrap promotes it (no champion yet), the hook finds it in place: revision 1
    code, out, err = trained(cli, ID_A)
    assert code == 0, err
    v1 = version_of(out)
    code, out, _ = cli("promote", "--model-name", MODEL, "--identity", ID_A, "--bootstrap")
    assert code == 0 and out.startswith("promoted:"), out
    code, out, _ = _promote(cli, ID_A, 1)
    assert code == 0 and out.startswith("already:"), out
    assert _records(I1) == {"served.1": v1, "identity": ID_A}

    # the scheduled retrain trains and promotes a better version, as the CronJob does
    v2 = retrained(cli, "retrain-1", max_iter=60)
    assert _alias() == v2
    assert _tags()["alias.production.moved"] == f"{v2} trigger:retrain-1"

    # revision 2 changes nothing the model depends on: its Job reuses v1, the hook keeps the retrain's version
    code, out, err = trained(cli, ID_A)
    assert code == 0 and version_of(out) == v1 and "already trained" in err, out + err
    code, out, _ = _promote(cli, ID_A, 2)
    assert code == 0 and out.startswith(f"kept: {MODEL} version {v2} is @production"), out
    assert _alias() == v2
    assert _records(I1)["served.2"] == v2

    # a person puts v1 back (MLflow UI / API): the next values-only upgrade respects that too
    MlflowClient().set_registered_model_alias(MODEL, "production", v1)
    code, out, _ = _promote(cli, ID_A, 3)
    assert code == 0 and out.startswith(f"kept: {MODEL} version {v1} is @production"), out
    assert _alias() == v1
    assert _records(I1) == {"served.1": v1, "served.2": v2, "served.3": v1, "identity": ID_A}

    # revision 4: a new identity goes through the gate against the champion (v1, put there by a person)
    code, out, err = trained(cli, ID_B, max_iter=40)
    assert code == 0, err
    v3 = version_of(out)
    code, out, _ = cli("promote", "--model-name", MODEL, "--identity", ID_B, "--bootstrap")
    assert code == 0 and out.startswith("skipped:"), (
        out
    )  # the bootstrap of its training pod stays out of the way
    code, out, err = _promote(cli, ID_B, 4, "--max-regression-pct", "5")
    assert code == 0 and out.startswith(f"promoted: {MODEL} version {v3}"), out + err
    assert _alias() == v3
    assert _tags()["alias.production.moved"] == f"{v3} helm:ml/housing@4"
    assert _records(I1)["served.4"] == v3 and _records(I1)["identity"] == ID_B

    # revision 5: a bad recipe, rejected (exit 3); the revision records the champion it keeps serving
    code, out, err = trained(cli, ID_C, max_iter=1, depth=1)
    assert code == 0, err
    v4 = version_of(out)
    code, _, err = _promote(cli, ID_C, 5)
    assert code == 3 and f"rejected: version {v4} rejected for @production" in err, err
    assert _alias() == v3
    assert _records(I1)["served.5"] == v3
    assert _records(I1)["identity"] == ID_B  # the rejected identity was never deployed

    # helm rollback 2: exactly what revision 2 served (the retrain's version); no training, no gate
    before = _versions()
    code, out, _ = _rollback(cli, 2)
    assert code == 0 and out.strip().endswith(f"version {v3} -> {v2}"), out
    assert _alias() == v2
    assert _tags()["alias.production.moved"] == f"{v2} helm-rollback:ml/housing@2"
    assert MlflowClient().get_model_version(MODEL, v3).tags["rolled_back.production"] == "true"
    # helm rollback 4 (after the rejected 5): the champion comes back
    code, out, _ = _rollback(cli, 4)
    assert code == 0 and out.strip().endswith(f"version {v2} -> {v3}"), out
    assert _alias() == v3
    assert _versions() == before  # nothing was trained

    # helm rollback 3 after v1 was deleted: exit 6 naming the version; nothing changes
    MlflowClient().delete_model_version(MODEL, v1)
    records = _records(I1)
    code, out, err = _rollback(cli, 3)
    assert code == 6, out + err
    assert (
        f"revision 3 of {RELEASE} served version {v1}: version {v1} of '{MODEL}' no longer exists" in err
    ), err
    assert "nothing changed" in err
    assert _alias() == v3 and _records(I1) == records

    # a revision without a record (an older chart): its identity's version if it passed the gate; else nothing
    code, out, _ = _rollback(cli, 9, "--identity", ID_C)
    assert code == 0 and out.startswith("kept: no record of what revision 9") and _alias() == v3, out
    code, out, _ = _rollback(cli, 9, "--identity", ID_B)
    assert code == 0 and _alias() == v3 and out.strip().endswith(f"version {v3} -> {v3}"), out

    # uninstall, install again (same name, another first_deployed): the first install's records are not its own
    code, out, _ = _rollback(cli, 2, install=I2)
    assert code == 0 and out.startswith(f"kept: no record of what revision 2 of {RELEASE} served"), out
    assert _alias() == v3
    # its revision 1 finds the rejected identity C judged before: the registry's champion stays
    code, out, _ = _promote(cli, ID_C, 1, install=I2)
    assert code == 0 and out.startswith(f"kept: {MODEL} version {v3} is @production"), out
    assert _records(I2) == {"served.1": v3}  # the identity C was not deployed by it
    # ... and its upgrade to a new identity is gated like any other
    code, out, err = trained(cli, ID_D, max_iter=80)
    assert code == 0, err
    v5 = version_of(out)
    code, out, err = _promote(cli, ID_D, 2, "--max-regression-pct", "5", install=I2)
    assert code == 0 and out.startswith(f"promoted: {MODEL} version {v5}"), out + err
    assert _records(I2) == {"served.1": v3, "served.2": v5, "identity": ID_D}
    assert (
        _records(I1)["served.4"] == v3 and _records(I1)["identity"] == ID_B
    )  # the first install's, untouched


def test_a_guard_failing_after_the_move_puts_the_alias_back(stack) -> None:
    """Helm gives up on the revision while its hook moves the alias: the move is undone, nothing recorded."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)  # not a closed earlier capture
    champion = _alias()
    candidate = registry.get_version(MODEL, version=lifecycle.trained(MODEL, ID_C).version)  # rejected before
    calls = []

    def guard() -> None:  # still deploying before the move, timed out right after it
        calls.append(_alias())
        if len(calls) > 1:
            raise Superseded("Helm is no longer deploying revision 3 of ml/housing (failed)")

    with pytest.raises(Superseded):
        gate_and_move(
            name=MODEL, alias="production", version=candidate.version, trigger=None,
            gate=Gate(max_regression_pct=1e9), wait_timeout=10, by="helm:ml/housing@3", guard=guard,
        )  # fmt: skip
    assert calls == [champion, candidate.version]  # checked before and after the alias moved
    assert _alias() == champion
    assert _tags()["alias.production.moved"] == f"{champion} helm:ml/housing@3"


def test_helm_giving_up_while_the_hook_waits_for_the_pin_undoes_the_move(stack) -> None:
    """The hook promoted before Helm's deadline, then waited for the pin; Helm gave up meanwhile (measured on the
    cluster with --rollback-on-failure): the final check undoes the move and exits 5."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)
    champion = _alias()
    # an identity whose version does not hold the alias (judged before; a loose gate passes it)
    identity = next(
        i
        for i in (ID_A, ID_B, ID_C)
        if (v := lifecycle.trained(MODEL, i)) is not None and str(v.version) != champion
    )
    # revision 40 of this install deployed another identity: 41 changes it, so it is gated
    lifecycle.record(MODEL, lifecycle.Revision.parse(RELEASE, 40, "pinwait"), champion, "e" * 16)
    at = lifecycle.Revision.parse(RELEASE, 41, "pinwait")
    settled: list[str] = []
    deploying = {"yes": True}

    def guard() -> None:
        if not deploying["yes"]:
            raise Superseded("Helm is no longer deploying revision 41 of ml/housing (failed)")

    def settle(version: str) -> None:  # the reconciler pins; Helm's --timeout expires meanwhile
        settled.append(version)
        deploying["yes"] = False

    with pytest.raises(Superseded):
        lifecycle.promote_revision(
            name=MODEL, alias="production", at=at, identity=identity, wait_timeout=10, guard=guard, settle=settle,
            promote=lambda v: gate_and_move(
                name=MODEL, alias="production", version=v, trigger=None, gate=Gate(max_regression_pct=1e9),
                wait_timeout=10, by="helm:ml/housing@41", guard=guard,
            ),
        )  # fmt: skip
    assert len(settled) == 1 and settled[0] != champion, (
        f"it had moved the alias and waited for the pin: {settled}"
    )
    assert _alias() == champion, "the move was undone"
    assert _tags()["alias.production.moved"].startswith(f"{champion} helm-superseded:ml/housing@41")


def test_the_hook_stops_waiting_once_the_training_failed(cli, trained) -> None:
    code, _, err = trained(cli, ID_FAILED, data="data/no-such-file.csv")
    assert code == 1, err
    started = time.monotonic()
    code, _, err = _promote(cli, ID_FAILED, 6, "--wait-timeout", "600")
    seconds = time.monotonic() - started
    # exit 4 and this message only come from the failed run it found, never from running out of time (exit 1,
    # "no version ... after 600s"): the chart's podFailurePolicy does not retry it either
    assert code == 4, err
    assert f"the training of identity {ID_FAILED} failed: " in err and "no-such-file.csv" in err, err
    assert "served.6" not in _records(I1)
    print(f"fail fast: the hook gave up {seconds:.1f}s after starting (wait budget 600s)")


# --- Helm's record decides whether a hook may act (--helm-record, the fake API server) ---------------------------


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_kube.FakeCluster]:
    yield from fake_kube.serve(tmp_path / "sa", monkeypatch)


def test_helm_record_gives_the_install_and_refuses_a_revision_helm_gave_up_on(cli, api) -> None:
    release, first = "guarded", "2026-12-05T10:00:00.25Z"
    install = kube.install_key(first)
    champion, tags = _alias(), _tags()

    def hook(revision: int, identity: str = ID_B):
        return cli(
            "promote", "--model-name", MODEL, "--identity", identity, "--release", f"ml/{release}",
            "--revision", str(revision), "--helm-record", "--max-regression-pct", "1000",
        )  # fmt: skip

    # Helm is installing revision 1: the hook acts, and keys its records by Helm's first_deployed
    api.add_helm_revision(release, 1, "pending-install", first)
    code, out, err = hook(1)
    assert code == 0 and out.startswith(("kept:", "already:")), out + err
    assert _records(install, f"ml.{release}")["served.1"] == champion
    # revision 2 timed out (Helm marked it failed) before its hook ran: exit 5, nothing moved, nothing recorded
    api.add_helm_revision(release, 2, "failed", first)
    code, out, err = hook(2, ID_D)
    assert code == 5, out + err
    assert f"Helm is no longer deploying revision 2 of ml/{release} (failed)" in err, err
    # no record at all (uninstalled; or a rollback's Role names another revision's Secret): exit 5 too
    code, _, err = hook(3, ID_D)
    assert code == 5 and f"Helm has no record of revision 3 of ml/{release}" in err, err
    api.forbidden.add(api.add_helm_revision(release, 4, "pending-upgrade", first))
    code, _, err = hook(4, ID_D)
    assert code == 5, err
    assert _alias() == champion
    assert set(_records(install, f"ml.{release}")) == {"served.1"}
    assert {k: v for k, v in _tags().items() if f".{release}." not in k} == {
        k: v for k, v in tags.items() if f".{release}." not in k
    }  # nothing else changed
    # a rollback hook reads the record for the install, but Helm has moved on (deployed): it still restores
    api.add_helm_revision(release, 1, "superseded", first)
    code, out, err = cli(
        "rollback", "--model-name", MODEL, "--release", f"ml/{release}", "--revision", "1", "--helm-record"
    )
    assert code == 0 and out.strip().endswith(f"version {champion} -> {champion}"), out + err


def test_helm_guard_names_why_a_hook_may_not_act(api) -> None:
    path = api.add_helm_revision("housing", 3, "pending-upgrade", FIRST)
    guard = lifecycle.helm_guard("ml", "housing", 3, I1)
    for status in ("pending-upgrade", "pending-install", "pending-rollback"):
        api.set_helm_status("housing", 3, status)
        guard()  # Helm is deploying the revision, of this install: the hook acts
    api.set_helm_status("housing", 3, "failed")  # --wait timed out, or the release was rolled back
    with pytest.raises(
        Superseded,
        match=r"^Helm is no longer deploying revision 3 of ml/housing \(failed\): this hook's outcome",
    ):
        guard()
    api.add_helm_revision("housing", 3, "pending-upgrade", AGAIN)  # uninstalled and installed again meanwhile
    with pytest.raises(Superseded, match=r"revision 3 of ml/housing \(another install\)"):
        guard()
    del api.objects[path]
    with pytest.raises(Superseded, match=r"revision 3 of ml/housing \(gone\)"):
        guard()
    assert Superseded.exit_code == 5


def test_a_hook_waiting_for_its_training_stops_once_helm_gave_up(cli, api, monkeypatch) -> None:
    """The training never registers (its pod is Pending, say) and Helm's --timeout passes: the hook ends (exit 5)
    instead of waiting out its own budget."""
    monkeypatch.setattr(lifecycle, "POLL_S", 0.2)
    api.add_helm_revision("waiting", 1, "pending-install", FIRST)
    timer = threading.Timer(1.0, api.set_helm_status, ("waiting", 1, "failed"))
    timer.start()
    started = time.monotonic()
    code, _, err = cli(
        "promote", "--model-name", MODEL, "--identity", "e" * 16, "--release", "ml/waiting", "--revision", "1",
        "--helm-record", "--wait-timeout", "600",
    )  # fmt: skip
    seconds = time.monotonic() - started
    timer.join()
    assert code == 5 and "Helm is no longer deploying revision 1 of ml/waiting (failed)" in err, err
    assert seconds < 30, seconds
    assert _records(I1, "ml.waiting") == {}
    print(f"the waiting hook ended {seconds:.1f}s after starting, Helm gave up after 1s (wait budget 600s)")


# --- bad arguments ------------------------------------------------------------------------------------------------

R = ["--release", RELEASE, "--revision", "1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["promote", "--identity", "NOT-HEX"], "training identity must be 8-64 lowercase hex characters"),
        (["promote", "--identity", ID_A, "--release", RELEASE], "--release and --revision go together"),
        (["promote", "--identity", ID_A, "--version", "1"], "give --version, or --identity / --trigger"),
        (["promote", "--identity", ID_A, *R], "--release needs --install-id or --helm-record"),
        (["promote", *R, "--install-id", I1], "--release needs --identity (HOUSING_IDENTITY)"),
        (["promote", "--identity", ID_A, *R, "--install-id", "Bad/Id"], "install id must be 1-12 lowercase"),
        (["promote", "--identity", ID_A, *R, "--install-id", "0123456789abcdef"], "got '0123456789abcdef'"),
        (["rollback", "--release", "Not A Release", "--revision", "1"], "release must be <namespace>/<name>"),
        (["rollback", "--release", RELEASE, "--revision", "0"], "Invalid value for '--revision'"),
        (["rollback", *R], "--release needs --install-id or --helm-record"),
        (["rollback", "--revision", "2", "--install-id", I1], "--release and --revision go together"),
        (["rollback", *R, "--install-id", "UPPER"], "install id must be 1-12 lowercase letters or digits"),
        (["train", "--identity", "xyz"], "training identity must be 8-64 lowercase hex characters"),
    ],
)
def test_bad_lifecycle_arguments_name_what_is_wrong(cli, stack, args: list[str], message: str) -> None:
    exists = MlflowClient().search_registered_models(f"name='{MODEL}'")
    before = (_versions(), _tags()) if exists else None
    code, _, err = cli(*args[:1], "--model-name", MODEL, *args[1:])
    assert code in (1, 2), err
    assert message in err, err
    if before:
        assert (_versions(), _tags()) == before  # and nothing changed
