"""The requirements a wheelhouse lacks for another Python version: docker/wheelhouse.sh's last step.

    python3 docker/wheelhouse_missing.py WHEELHOUSE PYTHON_VERSION REQUIREMENT...

`pip download --python-version` checks a wheel's Requires-Python against that version but evaluates
dependency markers against the Python running pip: resolved on 3.11.7, redis's
`async-timeout; python_full_version < '3.11.3'` is left out, and the image (bookworm's 3.11.2) cannot
install. This walks the requirements through the wheels' metadata with the image's markers and prints
each requirement no wheel meets, one a line, for pip to download.
"""

from __future__ import annotations

import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename


def wheels_by_name(wheelhouse: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for wheel in wheelhouse.glob("*.whl"):
        found.setdefault(canonicalize_name(parse_wheel_filename(wheel.name)[0]), []).append(wheel)
    return found


def dependencies(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        metadata = Parser().parsestr(archive.read(name).decode())
    return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


def missing(wheelhouse: Path, python_version: str, roots: list[str]) -> list[str]:
    environment = default_environment() | {
        "python_full_version": python_version,
        "python_version": ".".join(python_version.split(".")[:2]),
        "implementation_version": python_version,
    }
    wheels = wheels_by_name(wheelhouse)
    lacking: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    pending = [(Requirement(root), "") for root in roots]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate(environment | {"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        candidates = [
            wheel
            for wheel in wheels.get(name, [])
            if requirement.specifier.contains(parse_wheel_filename(wheel.name)[1], prereleases=True)
        ]
        if not candidates:
            lacking.setdefault(name, f"{requirement.name}{requirement.specifier}")
            continue
        for requested in {"", *requirement.extras}:
            if (name, requested) in seen:
                continue
            seen.add((name, requested))
            # The newest wheel of a name: what pip installs from a wheelhouse under a constraint.
            wheel = max(candidates, key=lambda path: parse_wheel_filename(path.name)[1])
            pending += [(dependency, requested) for dependency in dependencies(wheel)]
    return sorted(lacking.values())


if __name__ == "__main__":
    wheelhouse, version, *requirements = sys.argv[1:]
    print("\n".join(missing(Path(wheelhouse), version, requirements)))
