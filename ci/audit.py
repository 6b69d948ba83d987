"""Check every lock against published advisories: `make audit` (docs/security.md#dependencies-and-advisories).

    python ci/audit.py [--source pypi | --source osv:DIR] [--record ci/audit.json]
    python ci/audit.py --verify-record ci/audit.json     (offline; tests/images/test_audit.py)

Sources of advisories (OSV records: PYSEC/GHSA ids, CVE aliases, fixed versions):
  pypi      PyPI's JSON API per release, https://pypi.org/pypi/NAME/VERSION/json, field `vulnerabilities`: the
            data pip-audit's default service reads. The default. Where only the project endpoint answers, pins that
            are the latest release are checked through it and older ones are reported unanswered.
  osv:DIR   OSV records (*.json, *.yaml) under DIR: a checkout of the PyPA advisory database, or OSV's PyPI
            export unzipped, where the API is not reachable.
Each finding is (lock, package, version, advisory). ci/audit-accepted.toml accepts a whole lock (the test-only
MLServer stand-in) or one advisory of one package, each with its reason; any other finding, or a package the
source could not answer for, exits 1. --record writes the results with the date and the source; --verify-record
fails when a lock changed since (its pins no longer match) or when a recorded finding is not accepted.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import re
import sys
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {
    "dev": "requirements.lock",
    "serving": "images/serving/requirements.lock",
    "jobs": "images/jobs/requirements.lock",
    "mlflow": "images/mlflow/requirements.lock",
    "build": "images/common/build.lock",
    "test-services": "tests/images/services/requirements.lock",
    "mlserver-standin": "images/mlserver-standin/requirements.lock",
}
ACCEPTED = ROOT / "ci" / "audit-accepted.toml"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


class SourceError(Exception):
    """The advisory source did not answer for a package."""


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    return {canon(m[1]): m[2] for line in path.read_text().splitlines() if (m := PIN.match(line))}


def pins_digest(pins: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())).encode()).hexdigest()


def _key(version: str):
    from packaging.version import Version  # in every lock; only the osv source needs it

    return Version(version)


def in_ranges(ranges: list[dict], version: str) -> bool:
    """OSV ECOSYSTEM ranges: affected from an `introduced` up to (not including) `fixed`, or up to and including
    `last_affected`."""
    v = _key(version)
    for rng in ranges:
        if rng.get("type") != "ECOSYSTEM":
            continue
        events = []
        for event in rng.get("events", []):
            kind, at = next(iter(event.items()))
            if kind in ("introduced", "fixed", "last_affected"):
                events.append((_key("0") if at == "0" else _key(str(at)), kind))
        affected = False
        for at, kind in sorted(events, key=lambda e: e[0]):
            if kind == "introduced" and at <= v:
                affected = True
            elif (kind == "fixed" and at <= v) or (kind == "last_affected" and at < v):
                affected = False
        if affected:
            return True
    return False


def osv_findings(record: dict, name: str, version: str) -> dict | None:
    """The finding `record` makes for name==version, or None."""
    if record.get("withdrawn"):
        return None
    fixed = []
    hit = False
    for affected in record.get("affected", []):
        package = affected.get("package", {})
        if package.get("ecosystem") != "PyPI" or canon(package.get("name", "")) != name:
            continue
        ranges = affected.get("ranges", [])
        fixed += [
            str(e["fixed"])
            for r in ranges
            if r.get("type") == "ECOSYSTEM"
            for e in r["events"]
            if "fixed" in e
        ]
        hit = hit or version in [str(v) for v in affected.get("versions", [])] or in_ranges(ranges, version)
    if not hit:
        return None
    return finding(
        record["id"], record.get("aliases", []), fixed, record.get("summary") or record.get("details")
    )


def finding(ident: str, aliases: list[str], fixed_in: list[str], summary: str | None) -> dict:
    return {
        "id": ident,
        "aliases": sorted(aliases),
        "fixed_in": sorted(set(fixed_in), key=_sort_version),
        "summary": " ".join((summary or "").split())[:160],
    }


def merge(findings: list[dict]) -> list[dict]:
    """One finding per advisory: a source may list the same one under its PYSEC and its GHSA id."""
    out: list[dict] = []
    for item in findings:
        ids = {item["id"], *item["aliases"]}
        same = next((o for o in out if ids & {o["id"], *o["aliases"]}), None)
        if same is None:
            out.append(item)
            continue
        same["aliases"] = sorted((ids | set(same["aliases"])) - {same["id"]})
        same["fixed_in"] = sorted({*same["fixed_in"], *item["fixed_in"]}, key=_sort_version)
    return out


def _sort_version(version: str):
    try:
        return (0, _key(version))
    except ValueError:
        return (1, version)


def _get_json(url: str, timeout: float) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        raise SourceError(f"{url}: {exc}") from exc


def pypi_source(timeout: float = 20):
    """Per release; where only the project endpoint answers (a mirror or proxy that does not serve the release
    endpoint), its `vulnerabilities` are those of the latest release: used when the pin is the latest."""

    def lookup(name: str, version: str) -> list[dict]:
        try:
            data = _get_json(f"https://pypi.org/pypi/{name}/{version}/json", timeout)
        except SourceError as exc:
            data = _get_json(f"https://pypi.org/pypi/{name}/json", timeout)
            if data["info"]["version"] != version:
                raise SourceError(
                    f"release endpoint unavailable ({exc}); latest is {data['info']['version']}"
                ) from None
        return merge(
            [
                finding(
                    v["id"],
                    v.get("aliases") or [],
                    v.get("fixed_in") or [],
                    v.get("summary") or v.get("details"),
                )
                for v in data.get("vulnerabilities") or []
                if not v.get("withdrawn")
            ]
        )

    return "PyPI JSON API (https://pypi.org/pypi/NAME/VERSION/json, vulnerabilities)", lookup


def osv_source(folder: Path):
    import yaml  # PyYAML: in the dev lock

    by_package: dict[str, list[dict]] = {}
    files = [*folder.rglob("*.json"), *folder.rglob("*.yaml")]
    for path in files:
        text = path.read_text(encoding="utf-8")
        record = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(record, dict) or "id" not in record:
            continue
        for affected in record.get("affected", []):
            package = affected.get("package", {})
            if package.get("ecosystem") == "PyPI":
                by_package.setdefault(canon(package.get("name", "")), []).append(record)
    if not by_package:
        raise SystemExit(f"audit: no PyPI OSV records under {folder}")

    def lookup(name: str, version: str) -> list[dict]:
        found = (osv_findings(r, name, version) for r in by_package.get(name, []))
        return merge([f for f in found if f])

    return f"OSV records under {folder} ({len(files)} files)", lookup


def accepted_rules(path: Path = ACCEPTED) -> dict:
    """ci/audit-accepted.toml: whole locks, advisories of a package, pins reviewed by hand."""
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    return {
        "locks": {e["lock"]: e["reason"] for e in data.get("lock", [])},
        "advisories": data.get("advisory", []),
        "reviewed": data.get("reviewed", {}).get("pins", {}),
    }


def acceptance(lock: str, item: dict, rules: dict) -> str | None:
    """Why this finding (or unanswered pin: no "id") is kept, or None when nothing accepts it."""
    if lock in rules["locks"]:
        return f"whole lock: {rules['locks'][lock].split(':')[0]}"
    if "id" not in item:
        return rules["reviewed"].get(f"{item['package']}=={item['version']}")
    ids = {item["id"], *item["aliases"]}
    for rule in rules["advisories"]:
        if (
            canon(rule["package"]) == item["package"]
            and rule["id"] in ids
            and lock in rule.get("locks", [lock])
        ):
            return rule["reason"]
    return None


def audit(source) -> dict:
    label, lookup = source
    pins = {lock: read_pins(ROOT / path) for lock, path in LOCKS.items()}
    unique = sorted({item for p in pins.values() for item in p.items()})
    results: dict[tuple[str, str], list[dict] | str] = {}

    def one(item):
        try:
            return item, lookup(*item)
        except SourceError as exc:
            return item, f"no answer: {exc}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(pool.map(one, unique))
    record = {
        "checked": datetime.date.today().isoformat(),
        "source": label,
        "packages": len(unique),
        "locks": {},
    }
    for lock, lock_pins in pins.items():
        findings, errors = [], []
        for name, version in sorted(lock_pins.items()):
            got = results[(name, version)]
            if isinstance(got, str):
                errors.append({"package": name, "version": version, "error": got})
                continue
            findings += [{"package": name, "version": version, **f} for f in got]
        record["locks"][lock] = {
            "file": LOCKS[lock],
            "pins_sha256": pins_digest(lock_pins),
            "packages": len(lock_pins),
            "findings": findings,
            "errors": errors,
        }
    return record


def problems(record: dict, rules: dict | None = None, check_pins: bool = True) -> list[str]:
    rules = rules or accepted_rules()
    out = []
    for lock, path in LOCKS.items():
        entry = record["locks"].get(lock)
        if entry is None:
            out.append(f"{lock}: not in the record: make audit")
            continue
        if check_pins and entry["pins_sha256"] != pins_digest(read_pins(ROOT / path)):
            out.append(f"{lock}: {path} changed since the audit of {record['checked']}: make audit")
        for item in entry["errors"]:
            if acceptance(lock, item, rules) is None:
                out.append(f"{lock}: {item['package']}=={item['version']}: {item['error']}")
        for item in entry["findings"]:
            if acceptance(lock, item, rules) is None:
                ids = ", ".join([item["id"], *item["aliases"]])
                fixed = ", ".join(item["fixed_in"]) or "no fix"
                out.append(f"{lock}: {item['package']}=={item['version']}: {ids} (fixed in {fixed})")
    return out


def report(record: dict, rules: dict | None = None) -> None:
    rules = rules or accepted_rules()
    print(f"audit: {record['checked']}, {record['packages']} distinct pins, source: {record['source']}")
    for lock, entry in record["locks"].items():
        kept = [f for f in entry["findings"] if acceptance(lock, f, rules)]
        reviewed = [e for e in entry["errors"] if acceptance(lock, e, rules)]
        print(
            f"  {lock:17} {entry['packages']:4} packages, {len(entry['findings'])} findings "
            f"({len(kept)} accepted), {len(entry['errors'])} unanswered ({len(reviewed)} accepted)"
        )
        for item in entry["findings"]:
            why = acceptance(lock, item, rules)
            ids = ", ".join([item["id"], *item["aliases"]])
            print(
                f"    {item['package']}=={item['version']}: {ids}, fixed in {item['fixed_in'] or '-'}", end=""
            )
            print(f"  [accepted: {why.split(';')[0]}]" if why else "  [NOT ACCEPTED]")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="pypi", help="pypi (default) or osv:DIR")
    parser.add_argument("--record", type=Path, help="write the results here (JSON)")
    parser.add_argument(
        "--verify-record", type=Path, help="check a recorded audit against the locks, offline"
    )
    args = parser.parse_args(argv)
    if args.verify_record:
        record = json.loads(args.verify_record.read_text())
        found = problems(record)
    else:
        if args.source == "pypi":
            source = pypi_source()
        elif args.source.startswith("osv:"):
            source = osv_source(Path(args.source.removeprefix("osv:")))
        else:
            parser.error(f"unknown source {args.source!r}")
        record = audit(source)
        found = problems(record)
        if args.record:
            args.record.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    report(record)
    for line in found:
        print(f"audit: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
