"""Check an image's virtualenv against its lock.

    python check_lock.py images/NAME/requirements.lock [--path SITE_PACKAGES] [--allow NAME...] [--missing-ok "NAME..."]

``--path`` inspects that site-packages folder instead of the running interpreter's (needs ``packaging``).

Fails (exit 1) when a distribution is installed at a version the lock does not pin (``--allow`` names the
project's own package), or when an installed distribution needs one that is absent, unless that one is
listed in ``--missing-ok`` (heavy optional dependencies an image removes on purpose). Names are compared in
their normalised form (PEP 503).
"""

import argparse
import re
import sys
from importlib import metadata

from packaging.requirements import Requirement


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# `name[extras]==version`, then `;` markers, ` \` (hashes on the next lines) or the end of the line.
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def read_lock(path: str) -> dict[str, str]:
    pins = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            match = PIN.match(line)
            if match:
                pins[canon(match[1])] = match[2]
    return pins


def off_lock(installed: dict[str, str], pins: dict[str, str], allow: set[str]) -> list[str]:
    return [
        f"{name}=={version} (lock: {pins.get(name, 'absent')})"
        for name, version in sorted(installed.items())
        if name not in allow and pins.get(name) != version
    ]


def unmet(dists: list[metadata.Distribution], installed: dict[str, str], missing_ok: set[str]) -> list[str]:
    problems = []
    for dist in dists:
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            name = canon(req.name)
            if name in missing_ok:
                continue
            have = installed.get(name)
            if have is None or (req.specifier and not req.specifier.contains(have, prereleases=True)):
                problems.append(f"{dist.metadata['Name']} needs {spec} (installed: {have or 'nothing'})")
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock")
    parser.add_argument("--path", help="site-packages folder to inspect (default: this interpreter's)")
    parser.add_argument("--allow", nargs="*", default=[])
    parser.add_argument("--missing-ok", default="")
    args = parser.parse_args(argv)
    pins = read_lock(args.lock)
    dists = list(metadata.distributions(path=[args.path]) if args.path else metadata.distributions())
    installed = {canon(d.metadata["Name"]): d.version for d in dists}
    bad = off_lock(installed, pins, {canon(a) for a in args.allow})
    broken = unmet(dists, installed, {canon(n) for n in args.missing_ok.split()})
    for line in bad:
        print(f"check_lock: not as locked: {line}", file=sys.stderr)
    for line in broken:
        print(f"check_lock: unmet: {line}", file=sys.stderr)
    if bad or broken:
        return 1
    print(f"check_lock: {len(installed)} distributions, all pinned in {args.lock}, requirements met")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
