"""Chart.yaml's Artifact Hub metadata agrees with CHANGELOG.md and with what the chart renders."""

from __future__ import annotations

import re

import pytest
import yaml

from .conftest import CHART, ROOT, render

CHANGELOG = ROOT / "CHANGELOG.md"
KINDS = (
    "added",
    "changed",
    "deprecated",
    "removed",
    "fixed",
    "security",
)  # Artifact Hub's = Keep a Changelog's


def chart_meta() -> dict:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def annotation(name: str) -> list[dict]:
    value = yaml.safe_load(chart_meta()["annotations"][name])
    assert isinstance(value, list), f"{name} is not a YAML list"
    return value


def changelog_section(text: str, version: str) -> list[tuple[str, str]]:
    """(kind, description) of every bullet in `## [<version>]`, kind = its `### Kind` lowercased."""
    entries: list[tuple[str, str]] = []
    kind: str | None = None
    inside = False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = re.match(rf"## \[{re.escape(version)}\]", line) is not None
            kind = None
        elif not inside:
            continue
        elif line.startswith("### "):
            kind = line[4:].strip().lower()
        elif line.startswith("- "):
            assert kind is not None, f"bullet outside a ### section: {line}"
            entries.append((kind, line[2:].strip()))
        elif line.startswith("  ") and line.strip() and entries:
            last_kind, description = entries[-1]  # a wrapped bullet
            entries[-1] = (last_kind, f"{description} {line.strip()}")
    return entries


def repository(image: str) -> str:
    """`[registry/]repository[:tag][@digest]` -> repository."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    name = f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        name = rest
    return name


def images_in(obj: object) -> set[str]:
    """Every `image:` string anywhere in a rendered object (pods, ServingRuntime, storage containers)."""
    if isinstance(obj, dict):
        found = {obj["image"]} if isinstance(obj.get("image"), str) else set()
        for value in obj.values():
            found |= images_in(value)
        return found
    if isinstance(obj, list):
        return set().union(*(images_in(item) for item in obj)) if obj else set()
    return set()


def rendered_images() -> set[str]:
    return set().union(*(images_in(obj) for obj in render()))


def test_changes_match_the_changelog_section_of_the_chart_version():
    version = str(chart_meta()["version"])
    section = changelog_section(CHANGELOG.read_text(), version)
    assert section, f"CHANGELOG.md has no `## [{version}]` section with entries"
    changes = [(str(c["kind"]), str(c["description"])) for c in annotation("artifacthub.io/changes")]
    assert sorted(changes) == sorted(section), "Chart.yaml artifacthub.io/changes and CHANGELOG.md differ"


def test_changes_use_artifact_hub_kinds():
    for change in annotation("artifacthub.io/changes"):
        assert set(change) <= {"kind", "description", "links"}, change
        assert change["kind"] in KINDS, change


def test_security_updates_flag_follows_the_changelog():
    meta = chart_meta()
    kinds = {kind for kind, _ in changelog_section(CHANGELOG.read_text(), str(meta["version"]))}
    flag = meta["annotations"].get("artifacthub.io/containsSecurityUpdates", "false")
    assert flag == ("true" if "security" in kinds else "false")


def test_images_list_exactly_the_rendered_repositories():
    listed = annotation("artifacthub.io/images")
    assert all(set(item) == {"name", "image"} for item in listed), listed
    assert sorted(repository(item["image"]) for item in listed) == sorted(
        {repository(image) for image in rendered_images()}
    )


def test_images_are_the_default_references():
    # Artifact Hub scans these for vulnerabilities: the default tags, not just the repositories
    assert {item["image"] for item in annotation("artifacthub.io/images")} == rendered_images()


def test_license_and_links():
    meta = chart_meta()
    assert meta["annotations"]["artifacthub.io/license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text().splitlines()[1]
    links = {link["name"]: link["url"] for link in annotation("artifacthub.io/links")}
    assert set(links) == {"source", "docs"}
    assert links["source"] == meta["home"]
    assert meta["maintainers"], "Chart.yaml has no maintainers"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("docker.io/library/postgres:16.10-alpine", "library/postgres"),
        ("housing-mlops/jobs:0.1.0", "housing-mlops/jobs"),
        ("ghcr.io/acme/housing-mlops/serving@sha256:" + "0" * 64, "acme/housing-mlops/serving"),
        ("localhost:5000/housing-mlops/mlflow:0.1.0@sha256:" + "0" * 64, "housing-mlops/mlflow"),
        ("busybox", "busybox"),
    ],
)
def test_repository(image: str, expected: str):
    assert repository(image) == expected


def test_changelog_parsing():
    text = "## [1.0.0]\n### Added\n- a\n  wrapped\n### Fixed\n- b\n## [0.9.0]\n### Added\n- old\n"
    assert changelog_section(text, "1.0.0") == [("added", "a wrapped"), ("fixed", "b")]
    assert changelog_section(text, "2.0.0") == []
