"""Third-party policy scanners at zero on what users install: checkov and kube-score over the rendered
staging, prod and kind manifests (tests included). A finding is either fixed in the chart or skipped *in the
chart*, on the object, with its reason (the `housing-mlops.scanSkips` helper); anything else fails here.

kube-linter, which the issue named, is not served by the Go module proxy here (golang.stackrox.io/kube-linter:
no version); kube-score (github.com/zegl/kube-score, pinned in install_tools.py) is the Go-built scanner instead.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, TOOLS, helm, template_args

CHECKOV = TOOLS / "scanners" / "bin" / "checkov"
KUBE_SCORE = TOOLS / "bin" / "kube-score"
ENVIRONMENTS = ("staging", "prod", "kind")
CHECKOV_SKIP = "checkov.io/skip"
KUBE_SCORE_IGNORE = "kube-score/ignore"
KUBE_SCORE_REASON = "kube-score.housing-mlops.io/"


def rendered(env: str, tmp_path: Path, sets: tuple[str, ...] = ()) -> Path:
    out = tmp_path / f"{env}.yaml"
    out.write_text(helm(*template_args(values=(ROOT / "values" / f"{env}.yaml",), sets=sets)).stdout)
    return out


def checkov(manifest: Path) -> dict:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} missing: run `make tools`")
    # BC_SKIP_MAPPING: no call home for guideline links (there is no network); --skip-download: no policies
    # from the platform either. Not --quiet: the JSON then carries the skipped checks and their reasons.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"}
    args = [str(CHECKOV), "-f", str(manifest), "--framework", "kubernetes", "--compact", "--skip-download"]
    result = subprocess.run([*args, "-o", "json"], capture_output=True, text=True, env=env, check=False)
    (manifest.parent / f"{manifest.stem}.checkov.log").write_text(result.stderr)
    if result.returncode not in (0, 1):
        pytest.fail(f"checkov failed ({result.returncode}):\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def kube_score(manifest: Path) -> list[dict]:
    if not KUBE_SCORE.exists():
        pytest.fail(f"{KUBE_SCORE} missing: run `make tools`")
    args = [str(KUBE_SCORE), "score", str(manifest), "--kubernetes-version", "v1.35", "-o", "json"]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode not in (0, 1):  # 1: findings (read from the JSON)
        pytest.fail(f"kube-score failed ({result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout)


def kube_score_findings(report: list[dict]) -> list[str]:
    """Every check below the top grade that kube-score did not skip, WARNING and CRITICAL alike."""
    out = []
    for obj in report:
        for check in obj["checks"]:
            if check["skipped"] or check["grade"] >= 10:
                continue
            comments = "; ".join(c.get("summary", "") for c in check.get("comments") or [])
            out.append(
                f"{obj['object_name']} ({obj['type_meta']['kind']}): {check['check']['id']}: {comments}"
            )
    return out


def skip_annotations(manifest: Path) -> list[tuple[str, dict[str, str]]]:
    return [
        (f"{doc['kind']}/{doc['metadata']['name']}", doc["metadata"].get("annotations") or {})
        for doc in yaml.safe_load_all(manifest.read_text())
        if doc
    ]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_checkov_finds_nothing_unexplained(env: str, tmp_path: Path):
    summary = checkov(rendered(env, tmp_path))
    results, counts = summary["results"], summary["summary"]
    print(f"checkov {env}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    failed = [f"{c['resource']}: {c['check_id']} {c['check_name']}" for c in results["failed_checks"]]
    assert failed == []
    assert counts["passed"] > 0 and counts["parsing_errors"] == 0
    unexplained = [
        f"{c['resource']}: {c['check_id']}"
        for c in results["skipped_checks"]
        if not (c["check_result"].get("suppress_comment") or "").strip()
    ]
    assert unexplained == []


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_kube_score_finds_nothing_unexplained(env: str, tmp_path: Path):
    manifest = rendered(env, tmp_path)
    report = kube_score(manifest)
    checks = sum(len(o["checks"]) for o in report)
    print(f"kube-score {env}: {len(report)} objects, {checks} checks")
    assert len(report) >= 7  # the pods, Jobs, Services, NetworkPolicies, PDBs of the release
    assert kube_score_findings(report) == []


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_skip_in_the_chart_has_its_reason(env: str, tmp_path: Path):
    problems, skips = [], 0
    for name, notes in skip_annotations(rendered(env, tmp_path)):
        for key, value in notes.items():
            if key.startswith(CHECKOV_SKIP):
                skips += 1
                check, _, reason = value.partition("=")
                if not check.startswith("CKV") or not reason.strip():
                    problems.append(f"{name}: {key}: {value!r} is not ID=reason")
        ignored = [i for i in notes.get(KUBE_SCORE_IGNORE, "").split(",") if i]
        skips += len(ignored)
        reasons = {k[len(KUBE_SCORE_REASON) :] for k in notes if k.startswith(KUBE_SCORE_REASON)}
        problems += [f"{name}: kube-score ignores {i} without a reason" for i in ignored if i not in reasons]
        problems += [f"{name}: a reason for {r}, which is not ignored" for r in reasons - set(ignored)]
        problems += [
            f"{name}: empty reason for {r}" for r in reasons if not notes[KUBE_SCORE_REASON + r].strip()
        ]
    print(f"{env}: {skips} skips in the chart")
    assert skips > 0
    assert problems == []


def strip_skips(manifest: Path, kind: str) -> Path:
    """The same manifests with the scanner annotations removed from every object of one kind."""
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    for doc in docs:
        if doc["kind"] == kind:
            notes = doc["metadata"].get("annotations") or {}
            doc["metadata"]["annotations"] = {
                k: v
                for k, v in notes.items()
                if not k.startswith((CHECKOV_SKIP, KUBE_SCORE_IGNORE, KUBE_SCORE_REASON))
            }
    out = manifest.with_name(f"{manifest.stem}-stripped.yaml")
    out.write_text(yaml.safe_dump_all(docs))
    return out


def test_the_scanners_report_what_the_skips_hide(tmp_path: Path):
    """Without the chart's reasons, both scanners fail the Deployment: the tests above can fail."""
    manifest = strip_skips(rendered("staging", tmp_path), "Deployment")
    failed = {(c["resource"], c["check_id"]) for c in checkov(manifest)["results"]["failed_checks"]}
    assert ("Deployment.ml.housing-mlflow", "CKV_K8S_11") in failed  # no CPU limit
    assert ("Deployment.ml.housing-mlflow", "CKV_K8S_43") in failed  # by tag, no digest
    findings = kube_score_findings(kube_score(manifest))
    assert any("housing-mlflow (Deployment): container-image-pull-policy" in f for f in findings), findings
    assert any("housing-mlflow (Deployment): deployment-replicas" in f for f in findings), findings


def test_staging_with_network_policies_needs_no_network_policy_skip(tmp_path: Path):
    """The NetworkPolicy skip is rendered only where policies are off; turned on, every pod has one."""
    manifest = rendered("staging", tmp_path, sets=("global.networkPolicy.enabled=true",))
    notes = [a for _, a in skip_annotations(manifest)]
    assert not any(v.startswith("CKV2_K8S_6=") for a in notes for v in a.values())
    assert checkov(manifest)["results"]["failed_checks"] == []
    assert kube_score_findings(kube_score(manifest)) == []


def images(manifest: Path) -> list[str]:
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "image" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for doc in yaml.safe_load_all(manifest.read_text()):
        walk(doc)
    return found


def test_prod_renders_every_image_by_digest(tmp_path: Path):
    """Pods, the ServingRuntime and the storage initializer: no image of values/prod.yaml by tag."""
    refs = images(rendered("prod", tmp_path))
    print(f"prod: {len(refs)} image references, {len(set(refs))} distinct")
    assert len(set(refs)) >= 4
    assert [r for r in refs if "@sha256:" not in r] == []


def test_prod_pins_one_digest_per_repository(tmp_path: Path):
    """Where two components run the same image (the jobs image: training, hooks, tests, storage initializer),
    values/prod.yaml pins them to the same digest."""
    digests: dict[str, set[str]] = {}
    for ref in images(rendered("prod", tmp_path)):
        repository, _, digest = ref.partition("@")
        digests.setdefault(repository, set()).add(digest)
    assert {r: d for r, d in digests.items() if len(d) > 1} == {}
    assert len(digests) == 4  # postgres, mlflow, jobs, serving
