"""Generate charts/housing-mlops/README.md from the `# --` comments of its values.yaml (helm-docs style).

`python tests/chart/values_doc.py --write` rewrites the README (`make chart-docs`); test_docs.py fails when
the committed README drifts or a value has no description.
A comment block `# -- text` (continued by plain `#` lines) documents the key below it; `# @default -- text`
replaces the displayed default (for computed defaults).
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "housing-mlops"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(\s.*)?$")
HEADER = """# housing-mlops Helm chart

<!-- Generated from values.yaml by tests/chart/values_doc.py (`make chart-docs`); do not edit by hand. -->

Umbrella chart of the housing price model on Kubernetes: PostgreSQL and MLflow (tracking + registry, S3
artifacts), a training Job per release revision, a gated promotion hook (and a rollback hook), and a KServe
InferenceService `housing-model` (V2 protocol) served by the chart's own MLServer runtime.

```sh
helm install housing charts/housing-mlops -n housing --create-namespace -f values/staging.yaml --timeout 20m
helm test housing -n housing --logs
```

Needs Kubernetes >= 1.28 and KServe (CRDs + controller). Design, wiring and operations: docs/chart.md.

The predictor Service `<isvc>-predictor` answers V2 REST on port 80 (JSON, or the binary tensor extension that
tritonclient sends by default), V2 gRPC on 9000 and Prometheus metrics on 8082 (`inference.grpc`,
`inference.metrics`; Standard mode). `helm test` asks REST and gRPC. How to call it (curl, tritonclient HTTP and
gRPC): docs/cli.md, "Calling the served model".

## Values

| Key | Default | Description |
| --- | --- | --- |
"""


@dataclass
class Entry:
    key: str
    default: str
    description: str


def lookup(data, path: list[str]):
    for part in path:
        data = data[part]
    return data


def parse(values_file: Path) -> list[Entry]:
    text = values_file.read_text()
    data = yaml.safe_load(text)
    entries: list[Entry] = []
    stack: list[tuple[int, str]] = []
    description: list[str] | None = None
    default: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# -- "):
            description, default = [stripped[5:]], None
            continue
        if stripped.startswith("# @default -- "):
            default = stripped[len("# @default -- ") :]
            continue
        if stripped.startswith("#"):
            if description is not None and stripped != "#":
                description.append(stripped[1:].strip())
            continue
        match = KEY.match(line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if description is not None:
            path = [k for _, k in stack]
            shown = default if default is not None else f"`{json.dumps(lookup(data, path))}`"
            entries.append(Entry(".".join(path), shown, " ".join(description)))
        description, default = None, None
    return entries


def undocumented(values_file: Path, entries: list[Entry]) -> list[str]:
    """Leaf values that neither they nor an ancestor have a description for."""
    documented = {e.key for e in entries}
    missing = []

    def walk(node, path):
        key = ".".join(path)
        if key in documented:
            return
        if isinstance(node, dict) and node:
            for child, value in node.items():
                walk(value, [*path, child])
        else:
            missing.append(key)

    walk(yaml.safe_load(values_file.read_text()), [])
    return missing


def render_readme(values_file: Path = CHART / "values.yaml") -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = [f"| `{e.key}` | {cell(e.default)} | {cell(e.description)} |" for e in parse(values_file)]
    return HEADER + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the README instead of printing it")
    args = parser.parse_args()
    readme = render_readme()
    if args.write:
        (CHART / "README.md").write_text(readme)
    else:
        print(readme, end="")


if __name__ == "__main__":
    main()
