"""The advisory audit of every lock (ci/audit.py, `make audit`): the recorded run (ci/audit.json) still matches
the locks and has nothing unaccepted, every acceptance is still needed, and the OSV matching is right. Offline:
`make audit` is what asks the advisory source again."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "ci" / "audit.json"


def _load():
    spec = importlib.util.spec_from_file_location("audit", ROOT / "ci" / "audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


audit = _load()


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(RECORD.read_text())


def test_the_recorded_audit_matches_the_locks_and_accepts_every_finding(record):
    """A lock changed since the audit, or a finding nobody accepted: `make audit` (docs/security.md)."""
    assert set(record["locks"]) == set(audit.LOCKS)
    assert audit.problems(record) == []


def test_every_acceptance_is_still_needed(record):
    """ci/audit-accepted.toml lists nothing the record does not need (a stale entry would hide a new finding)."""
    rules = audit.accepted_rules()
    unanswered = {
        f"{e['package']}=={e['version']}"
        for lock, entry in record["locks"].items()
        if lock not in rules["locks"]
        for e in entry["errors"]
    }
    assert set(rules["reviewed"]) == unanswered
    found = [(lock, f) for lock, entry in record["locks"].items() for f in entry["findings"]]
    for rule in rules["advisories"]:
        assert any(
            audit.canon(rule["package"]) == f["package"] and rule["id"] in {f["id"], *f["aliases"]}
            for _, f in found
        ), f"{rule['id']} ({rule['package']}) is no longer found: remove it from ci/audit-accepted.toml"
    assert set(rules["locks"]) <= set(audit.LOCKS)


OSV = {
    "id": "PYSEC-0000-1",
    "aliases": ["CVE-0000-1"],
    "summary": "example",
    "affected": [
        {
            "package": {"name": "Some_Pkg", "ecosystem": "PyPI"},
            "ranges": [
                {"type": "GIT", "events": [{"introduced": "0"}, {"fixed": "abc123"}]},
                {"type": "ECOSYSTEM", "events": [{"introduced": "1.2"}, {"fixed": "1.4.1"}]},
                {"type": "ECOSYSTEM", "events": [{"introduced": "2.0"}, {"last_affected": "2.1"}]},
            ],
            "versions": ["0.9"],
        }
    ],
}


@pytest.mark.parametrize(
    ("version", "hit"),
    [
        ("1.1", False),
        ("1.2", True),
        ("1.4.0", True),
        ("1.4.1", False),
        ("2.1", True),
        ("2.1.1", False),
        ("0.9", True),
    ],
)
def test_osv_ranges_and_versions(version, hit):
    found = audit.osv_findings(OSV, "some-pkg", version)
    assert (found is not None) == hit
    if found:
        assert found["fixed_in"] == ["1.4.1"]  # ECOSYSTEM fixes only, no commit ids


def test_withdrawn_advisories_and_other_ecosystems_do_not_count():
    assert audit.osv_findings({**OSV, "withdrawn": "2024-01-01T00:00:00Z"}, "some-pkg", "1.3") is None
    other = {**OSV, "affected": [{**OSV["affected"][0], "package": {"name": "some-pkg", "ecosystem": "npm"}}]}
    assert audit.osv_findings(other, "some-pkg", "1.3") is None


def test_one_finding_per_advisory_across_its_ids():
    merged = audit.merge(
        [
            audit.finding("GHSA-x", ["CVE-1", "PYSEC-1"], [], "a"),
            audit.finding("PYSEC-1", ["CVE-1", "GHSA-x"], ["2.0"], "a"),
            audit.finding("GHSA-y", [], [], "b"),
        ]
    )
    assert [(m["id"], m["aliases"], m["fixed_in"]) for m in merged] == [
        ("GHSA-x", ["CVE-1", "PYSEC-1"], ["2.0"]),
        ("GHSA-y", [], []),
    ]


def test_a_changed_lock_or_an_unaccepted_finding_fails(record):
    changed = json.loads(json.dumps(record))
    changed["locks"]["serving"]["pins_sha256"] = "0" * 64
    assert any("serving: images/serving/requirements.lock changed" in p for p in audit.problems(changed))
    changed = json.loads(json.dumps(record))
    changed["locks"]["serving"]["findings"].append(
        {"package": "starlette", "version": "1.10.0", **audit.finding("GHSA-new", ["CVE-9"], ["9.9"], "x")}
    )
    assert audit.problems(changed) == ["serving: starlette==1.10.0: GHSA-new, CVE-9 (fixed in 9.9)"]
