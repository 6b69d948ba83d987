"""The lifecycle model (lifecycle.py) against the real local MLflow, as the chart's Jobs and hooks drive it.

One registered model of its own, so the other pipeline tests' versions and aliases are untouched. The Helm
story: install (revision 1), an upgrade that changes nothing the model depends on (2), an accepted retrain (3),
a rejected one (4), `helm rollback` (to 3), `helm rollback 1`, then a failed training the hook must not wait for.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

MODEL = "lifecycle-model"
RELEASE = "ml/housing"
ID_A, ID_B, ID_C, ID_FAILED = "a" * 16, "b" * 16, "c" * 16, "f" * 16


@pytest.fixture(scope="module")
def trained(stack, dvc_repo: Path, pushed: str):
    """train(identity, max_iter, depth) through the CLI, returning (exit code, stdout, stderr)."""

    def run(cli, identity: str, max_iter: int = 20, depth: int = 8, data: str | None = None):
        return cli(
            "train", "--model-name", MODEL, "--repo", str(dvc_repo), "--data", data or pushed,
            "--identity", identity, "--max-iter", str(max_iter), "--max-depth", str(depth),
        )  # fmt: skip

    return run


def _versions() -> list[tuple[str, str]]:
    found = MlflowClient().search_model_versions(f"name='{MODEL}'")
    return sorted((v.version, v.tags.get("identity", "")) for v in found)


def _alias() -> str:
    return MlflowClient().get_model_version_by_alias(MODEL, "production").version


def _promote(cli, identity: str, revision: int, *extra: str):
    return cli(
        "promote", "--model-name", MODEL, "--identity", identity, "--release", RELEASE,
        "--revision", str(revision), *extra,
    )  # fmt: skip


def test_the_release_story(cli, trained) -> None:
    # install: train identity A, bootstrap promotes it (no champion yet), the hook records revision 1
    code, out, err = trained(cli, ID_A)
    assert code == 0, err
    v1 = out.split("version=")[1].split()[0]
    code, out, _ = cli("promote", "--model-name", MODEL, "--identity", ID_A, "--bootstrap")
    assert code == 0 and out.startswith("promoted:"), out
    code, out, _ = _promote(cli, ID_A, 1)
    assert code == 0 and out.startswith("already:"), out

    # revision 2 changes nothing the model depends on: the Job (if it runs again) reuses, the hook does nothing
    code, out, err = trained(cli, ID_A)
    assert code == 0 and f"version={v1} " in out, out
    assert "already trained" in err
    code, out, _ = _promote(cli, ID_A, 2)
    assert code == 0 and out.startswith("already:")
    assert _versions() == [(v1, ID_A)]

    # revision 3: a new identity, accepted; the bootstrap of its training pod stays out of the way
    code, out, _ = trained(cli, ID_B, max_iter=40)
    assert code == 0
    v2 = out.split("version=")[1].split()[0]
    code, out, _ = cli("promote", "--model-name", MODEL, "--identity", ID_B, "--bootstrap")
    assert code == 0 and out.startswith("skipped:"), out
    code, out, _ = _promote(cli, ID_B, 3, "--max-regression-pct", "5")
    assert code == 0 and out.startswith("promoted:"), out
    assert _alias() == v2

    # revision 4: a bad recipe, rejected; the revision records that it keeps serving the champion
    code, out, _ = trained(cli, ID_C, max_iter=1, depth=1)
    assert code == 0
    code, _, err = _promote(cli, ID_C, 4)
    assert code == 3, err
    tags = MlflowClient().get_registered_model(MODEL).tags
    assert tags["served.ml.housing.1"] == v1
    assert tags["served.ml.housing.3"] == v2
    assert tags["served.ml.housing.4"] == v2

    # helm rollback (to 3) after the rejected upgrade: the champion stays
    before = _versions()
    code, out, _ = cli("rollback", "--model-name", MODEL, "--release", RELEASE, "--revision", "3")
    assert code == 0, out
    assert _alias() == v2
    # helm rollback 1: exactly what revision 1 served; no training, no gate
    code, out, _ = cli("rollback", "--model-name", MODEL, "--release", RELEASE, "--revision", "1")
    assert code == 0 and out.strip().endswith(f"version {v2} -> {v1}"), out
    assert _alias() == v1
    assert _versions() == before  # nothing was trained
    assert MlflowClient().get_model_version(MODEL, v2).tags["rolled_back.production"] == "true"

    # a revision from before the record: its identity's version, if it passed the gate; else the alias stays
    code, out, _ = cli(
        "rollback", "--model-name", MODEL, "--release", RELEASE, "--revision", "9", "--identity", ID_B
    )
    assert code == 0 and _alias() == v2, out
    code, out, _ = cli(
        "rollback", "--model-name", MODEL, "--release", RELEASE, "--revision", "9", "--identity", ID_C
    )
    assert code == 0 and out.startswith("kept:") and _alias() == v2, out


def test_the_hook_stops_waiting_once_the_training_failed(cli, trained) -> None:
    code, _, err = trained(cli, ID_FAILED, data="data/no-such-file.csv")
    assert code == 1, err
    started = time.monotonic()
    code, _, err = _promote(cli, ID_FAILED, 5, "--wait-timeout", "600")
    seconds = time.monotonic() - started
    # exit 4 and this message only come from the failed run it found, never from running out of time (exit 1,
    # "no version ... after 600s"): the chart's podFailurePolicy does not retry it either
    assert code == 4, err
    assert f"the training of identity {ID_FAILED} failed: " in err and "no-such-file.csv" in err, err
    print(f"fail fast: the hook gave up {seconds:.1f}s after starting (wait budget 600s)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["promote", "--identity", "NOT-HEX"], "training identity must be 8-64 lowercase hex characters"),
        (["promote", "--identity", ID_A, "--release", RELEASE], "--release and --revision go together"),
        (["promote", "--identity", ID_A, "--version", "1"], "give --version, or --identity / --trigger"),
        (["rollback", "--release", "Not A Release", "--revision", "1"], "release must be <namespace>/<name>"),
        (["rollback", "--release", RELEASE, "--revision", "0"], "Invalid value for '--revision'"),
        (["train", "--identity", "xyz"], "training identity must be 8-64 lowercase hex characters"),
    ],
)
def test_bad_lifecycle_arguments_name_what_is_wrong(cli, stack, args: list[str], message: str) -> None:
    before = _versions() if MlflowClient().search_registered_models(f"name='{MODEL}'") else []
    code, _, err = cli(*args[:1], "--model-name", MODEL, *args[1:])
    assert code in (1, 2), err
    assert message in err, err
    if before:
        assert _versions() == before  # and nothing changed
