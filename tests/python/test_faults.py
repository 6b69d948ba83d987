"""Faults on the real local stack: MLflow killed mid-training, racing promotions, rollback.

(PostgreSQL and S3 restarts losing nothing: test_local.py; a worse model rejected with the alias unchanged:
test_pipeline.py; credentials refused: test_auth.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from housing_mlops import local, promote
from housing_mlops.promote import Gate
from mlflow import MlflowClient

MODEL = "housing-model"
RACE = "race-model"


def poll(condition, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


def _port_closed(port: int) -> bool:
    return not local._port_open(port)


def test_mlflow_killed_during_training(
    stack: local.LocalConfig, champion: str, dvc_repo: Path, pushed: str
) -> None:
    """SIGKILL MLflow while a training job runs: the job fails in one clear line, nothing is registered."""
    client = MlflowClient()
    versions = {v.version for v in client.search_model_versions(f"name='{MODEL}'")}
    log = stack.state_dir / "killed-train.log"
    argv = [sys.executable, "-m", "housing_mlops.cli", "train", "--repo", str(dvc_repo), "--data", pushed]
    with log.open("w") as err:
        job = subprocess.Popen(
            [*argv, "--trigger", "killed-mid-train", "--max-iter", "50", "--wait-timeout", "5"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"},
        )
    try:
        # the job has MLflow's answer and is pulling data / fitting: now the server dies
        poll(
            lambda: "dvc pull" in log.read_text() or job.poll() is not None, 120, "the job to start training"
        )
        assert job.poll() is None, log.read_text()
        mlflow_pid = json.loads((stack.state_dir / "stack.json").read_text())["pids"]["mlflow"]
        os.killpg(mlflow_pid, signal.SIGKILL)
        poll(lambda: _port_closed(stack.mlflow_port), 30, "MLflow's port to close")
        code = job.wait(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
        local.up(stack)  # bring MLflow back for the other tests (and to inspect the registry)
    stderr = log.read_text()
    assert code == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: MLflow") and f"127.0.0.1:{stack.mlflow_port}" in last, last
    assert "Traceback" not in stderr
    assert {v.version for v in client.search_model_versions(f"name='{MODEL}'")} == versions
    assert client.search_model_versions(f"name='{MODEL}' and tags.trigger='killed-mid-train'") == []
    assert client.get_model_version_by_alias(MODEL, "production").version == champion


@pytest.fixture(scope="module")
def race_model(stack: local.LocalConfig):
    """Cheap versions of `race-model` (runs with a chosen rmse; the gate reads only metrics and tags)."""
    client = MlflowClient()
    found = client.get_experiment_by_name("race")
    experiment = found.experiment_id if found else client.create_experiment("race")
    client.create_registered_model(RACE)
    md5 = "0" * 32

    def make(rmse: float) -> str:
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "rmse", rmse)
        client.set_terminated(run.info.run_id)
        created = client.create_model_version(
            RACE,
            f"s3://{stack.bucket}/race/{run.info.run_id}/model",
            run_id=run.info.run_id,
            tags={"dataset.md5": md5},
            await_creation_for=30,
        )
        return created.version

    return make


def holder(alias: str = "production") -> str:
    return MlflowClient().get_model_version_by_alias(RACE, alias).version


def history(alias: str = "production") -> list[str]:
    return MlflowClient().get_registered_model(RACE).tags[f"alias.{alias}.history"].split(",")


def test_promotions_racing_as_processes_end_consistent(race_model, cli) -> None:
    """Three real `promote` processes at once: the best candidate ends on the alias, the worse-than-champion one
    is rejected and never recorded, the history ends with the holder, and rollback goes to a gated version."""
    champion = race_model(100.0)
    assert cli("promote", "--model-name", RACE, "--version", champion)[0] == 0
    best, good, worse = race_model(90.0), race_model(95.0), race_model(150.0)
    procs = {
        v: subprocess.Popen(
            [sys.executable, "-m", "housing_mlops.cli", "promote", "--model-name", RACE, "--version", v],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in (good, best, worse)
    }
    results = {v: (p.wait(timeout=180), *p.communicate()) for v, p in procs.items()}
    assert results[worse][0] == 3, results[worse]
    assert results[best][0] == 0, results[best]
    assert results[good][0] in (0, 3), results[good]  # 3 when it was judged after the better one landed
    assert holder() == best
    assert history()[-1] == best and worse not in history()
    assert "alias.production.lease" not in MlflowClient().get_registered_model(RACE).tags
    code, out, _ = cli("rollback", "--model-name", RACE)
    assert code == 0
    assert holder() in (good, champion) and out.strip().endswith(f"-> {holder()}")


class InterleavingGate(Gate):
    """A gate that, right after judging, lets a competing promotion run to the end: the worst interleaving of
    two promotions (both judged against the same champion) made deterministic."""

    competitor: str | None = None

    def judge(self, candidate, champion):
        verdict = super().judge(candidate, champion)
        if self.competitor is not None:
            other, self.competitor = self.competitor, None
            promote.promote(
                name=RACE, alias="interleaved", version=other, trigger=None, gate=Gate(), wait_timeout=5
            )
        return verdict


def test_a_promotion_overtaken_while_judging_is_judged_again(race_model, cli) -> None:
    """v(95) and v(90) both pass against the champion v(100); v(90) lands first. Without the re-check v(95)
    would then overwrite it: a worse model than the one serving, never judged against it."""
    champion, best, good = race_model(100.0), race_model(90.0), race_model(95.0)
    promote.promote(
        name=RACE, alias="interleaved", version=champion, trigger=None, gate=Gate(), wait_timeout=5
    )
    gate = InterleavingGate()
    gate.competitor = best
    with pytest.raises(
        promote.GateRejected, match=f"version {good} rejected for @interleaved: rmse 95 vs champion 90"
    ):
        promote.promote(name=RACE, alias="interleaved", version=good, trigger=None, gate=gate, wait_timeout=5)
    assert holder("interleaved") == best
    assert history("interleaved") == [champion, best]


def test_a_better_promotion_takes_the_alias_back(race_model, monkeypatch) -> None:
    """A worse competitor's alias write lands just after ours: we notice on re-reading and take the alias back."""
    champion, best, good = race_model(100.0), race_model(90.0), race_model(95.0)
    promote.promote(name=RACE, alias="late", version=champion, trigger=None, gate=Gate(), wait_timeout=5)
    client = MlflowClient()
    original = MlflowClient.set_registered_model_alias
    calls = []

    def late_write(self, name, alias, version):
        original(self, name, alias, version)
        calls.append(version)
        if version == best and len(calls) == 1:
            original(self, name, alias, good)  # the competitor's write lands right after ours

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", late_write)
    outcome = promote.promote(
        name=RACE, alias="late", version=best, trigger=None, gate=Gate(), wait_timeout=5
    )
    assert outcome == ("promoted", best)
    assert calls == [best, best]  # written, overwritten by the competitor, taken back
    assert client.get_model_version_by_alias(RACE, "late").version == best
    assert history("late")[-1] == best


def test_promotions_take_turns_through_the_lease(race_model, cli) -> None:
    """A lease left by a crashed promotion holds the alias until it expires; then the next promotion proceeds
    and releases its own lease."""
    champion, better = race_model(100.0), race_model(90.0)
    assert cli("promote", "--model-name", RACE, "--alias", "turns", "--version", champion)[0] == 0
    client = MlflowClient()
    assert "alias.turns.lease" not in client.get_registered_model(RACE).tags  # released after use
    client.set_registered_model_tag(
        RACE, "alias.turns.lease", f"crashed-job:7:0123abcd {time.time() + 4:.3f}"
    )
    started = time.monotonic()
    code, _, err = cli("promote", "--model-name", RACE, "--alias", "turns", "--version", better)
    assert code == 0, err
    assert time.monotonic() - started >= 3  # it waited for the foreign lease to expire, not overwrote it
    assert "@turns is being changed by crashed-job:7:0123abcd: waiting for its turn" in err
    assert holder("turns") == better
    assert "alias.turns.lease" not in client.get_registered_model(RACE).tags


def test_tags_created_by_racing_jobs_are_all_written(race_model) -> None:
    """Six writers creating one new tag at once: MLflow's SQL store lets the slower inserts fail with a unique-key
    violation (the CI failure of the racing promotions); `registry.set_model_tag` rewrites, so none fails."""
    from housing_mlops import registry

    version = race_model(100.0)
    errors: list[str] = []
    for key in [f"race.{i}" for i in range(12)]:
        start = threading.Barrier(6)

        def write(value: str, key: str = key, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                registry.set_model_tag(RACE, key, value)
                registry.set_model_tag(RACE, key, value, version=version)
            except Exception as exc:  # collected, asserted below
                errors.append(f"{key}: {exc}"[:300])

        writers = [threading.Thread(target=write, args=(f"w{i}",)) for i in range(6)]
        for w in writers:
            w.start()
        for w in writers:
            w.join(timeout=60)
        model_tags = MlflowClient().get_registered_model(RACE).tags
        version_tags = MlflowClient().get_model_version(RACE, version).tags
        assert model_tags[key] in {f"w{i}" for i in range(6)}
        assert version_tags[key] in {f"w{i}" for i in range(6)}
    assert not errors, errors
