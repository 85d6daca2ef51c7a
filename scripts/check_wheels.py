"""Prove that every runtime package the image installs has a binary wheel for the image.

    .venv/bin/python scripts/check_wheels.py [--python 3.12] [--glibc 2.34]
        [--arch x86_64] [--pip-arg ARG ...] [--dest DIR] [REQUIREMENT ...]

The image's base decides which wheels install: `pip install` in the Dockerfile picks a
wheel only if its tags fit the base's OS (glibc), CPU and Python, and otherwise builds the
sdist (no compiler in the Lambda base) or fails. This resolves what the Dockerfile's
`pip install` commands install (pyproject's dependencies plus the extras they name, and
any other requirement they name, pinned by constraints.txt) together with
`pip download --only-binary=:all:` for that platform: pip takes
only wheels whose tags fit, so a package with only an sdist, or only wheels for a newer
glibc, fails the check and is named.

By default the target comes from the Dockerfile's `FROM public.ecr.aws/lambda/python:X.Y`
(the OS of each Lambda Python base is in LAMBDA_BASE_GLIBC) and the CPU from
template.yaml's Architectures. The wheels land in .tools/wheels/ (gitignored); a second
run with the same Dockerfile, pyproject.toml, constraints.txt and this script reuses the
result. REQUIREMENTS and --pip-arg (e.g. `--no-index --find-links DIR`) replace the
image's set and add pip options, for trying the check on other packages.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"

# glibc of the OS under each AWS Lambda Python base image: python3.11 and older run on
# Amazon Linux 2 (glibc 2.26); python3.12 and newer on Amazon Linux 2023 (glibc 2.34,
# https://docs.aws.amazon.com/linux/al2023/ug/core-glibc.html).
LAMBDA_BASE_GLIBC = {"3.11": (2, 26), "3.12": (2, 34), "3.13": (2, 34)}
BASE_IMAGE = re.compile(r"^FROM public\.ecr\.aws/lambda/python:(\d+\.\d+)\S*", re.M)
# PEP 600 aliases: the legacy names of manylinux_2_5, _2_12 and _2_17.
OPTIONS_WITH_VALUE = {"-c", "--constraint", "-t", "--target", "-r", "--requirement"}
LEGACY_MANYLINUX = {(2, 5): "manylinux1", (2, 12): "manylinux2010", (2, 17): "manylinux2014"}


@dataclass(frozen=True)
class Target:
    python: str
    glibc: tuple[int, int]
    arch: str

    def platforms(self) -> list[str]:
        """Every manylinux platform tag that runs on this glibc, newest first."""
        major, newest = self.glibc
        tags = []
        for minor in range(newest, 4, -1):
            tags.append(f"manylinux_{major}_{minor}_{self.arch}")
            if (major, minor) in LEGACY_MANYLINUX:
                tags.append(f"{LEGACY_MANYLINUX[major, minor]}_{self.arch}")
        return tags

    def __str__(self) -> str:
        return f"CPython {self.python}, glibc {self.glibc[0]}.{self.glibc[1]}, {self.arch}"


def image_python(dockerfile: Path = ROOT / "Dockerfile") -> str:
    """The Python version of the Dockerfile's Lambda base image."""
    found = BASE_IMAGE.search(dockerfile.read_text())
    if not found:
        raise SystemExit(f"{dockerfile}: no 'FROM public.ecr.aws/lambda/python:X.Y' line")
    return found.group(1)


def image_target(root: Path = ROOT) -> Target:
    """The platform the image runs on: its base's Python and glibc, the template's CPU."""
    python = image_python(root / "Dockerfile")
    if python not in LAMBDA_BASE_GLIBC:
        raise SystemExit(
            f"Dockerfile: the glibc of the Lambda python:{python} base is not known here; "
            f"add it to LAMBDA_BASE_GLIBC (known: {', '.join(LAMBDA_BASE_GLIBC)})"
        )
    architectures = re.findall(
        r"^\s*Architectures: \[(\w+)\]", (root / "template.yaml").read_text(), re.M
    )
    if len(architectures) != 1:
        raise SystemExit("template.yaml: expected one 'Architectures: [ARCH]' line")
    return Target(python, LAMBDA_BASE_GLIBC[python], architectures[0])


def image_requirements(root: Path = ROOT) -> list[str]:
    """What the Dockerfile's `pip install` commands ask for: each requirement as written,
    with `".[extras]"` (refload itself) standing for pyproject's dependencies + extras."""
    dockerfile = (root / "Dockerfile").read_text().replace("\\\n", " ")
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    requirements: list[str] = []
    for command in re.findall(r"pip install ([^&\n]+)", dockerfile):
        words = iter(shlex.split(command))
        for word in words:
            if word in OPTIONS_WITH_VALUE:
                next(words)
            elif word.startswith(".["):
                requirements += project["dependencies"]
                for extra in word[2:-1].split(","):
                    requirements += project["optional-dependencies"][extra]
            elif not word.startswith("-"):
                requirements.append(word)
    if not requirements:
        raise SystemExit("Dockerfile: no `pip install` found")
    return requirements


def pip_download(target: Target, requirements: list[str], dest: Path, pip_args: list[str]) -> int:
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check"]
    command += ["--only-binary=:all:", "--implementation", "cp"]
    command += ["--python-version", target.python, "--dest", str(dest)]
    command += ["--cache-dir", str(TOOLS / "pip-cache"), "-c", str(ROOT / "constraints.txt")]
    for platform in target.platforms():
        command += ["--platform", platform]
    completed = subprocess.run(
        [*command, *pip_args, *requirements], capture_output=True, text=True, check=False
    )
    if completed.returncode:
        missing = re.findall(
            r"No matching distribution found for (\S+)|Cannot install (\S+) because",
            completed.stderr,
        )
        print(completed.stderr.strip(), file=sys.stderr)
        names = ", ".join("".join(found) for found in missing) or "see pip's message above"
        print(f"FAIL: no binary wheel for {target}: {names}", file=sys.stderr)
    return completed.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requirements", nargs="*", help="default: what the Dockerfile installs")
    parser.add_argument("--python", help="X.Y (default: the Dockerfile's base)")
    parser.add_argument("--glibc", help="X.Y (default: the OS of the Dockerfile's base)")
    parser.add_argument("--arch", help="default: template.yaml's Architectures")
    parser.add_argument("--pip-arg", action="append", default=[], help="an extra pip option")
    parser.add_argument("--dest", type=Path, help="where the wheels go (default: .tools/wheels/)")
    args = parser.parse_args(argv)

    image = image_target()
    glibc = tuple(int(p) for p in args.glibc.split(".")) if args.glibc else image.glibc
    target = Target(args.python or image.python, (glibc[0], glibc[1]), args.arch or image.arch)
    requirements = args.requirements or image_requirements()

    inputs = [ROOT / "Dockerfile", ROOT / "pyproject.toml", ROOT / "constraints.txt"]
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in inputs:
        digest.update(path.read_bytes())
    digest.update(repr((target, requirements, args.pip_arg)).encode())
    tag = f"cp{target.python.replace('.', '')}-{target.platforms()[0]}"
    dest = args.dest or TOOLS / "wheels" / tag
    stamp = dest / ".checked"
    if stamp.is_file() and stamp.read_text() == digest.hexdigest():
        print(f"wheels: every package has a wheel for {target} (unchanged since the last check)")
        return 0
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if pip_download(target, requirements, dest, args.pip_arg):
        return 1
    files = sorted(p.name for p in dest.iterdir() if not p.name.startswith("."))
    not_wheels = [name for name in files if not name.endswith(".whl")]
    if not_wheels:
        print(f"FAIL: not wheels: {', '.join(not_wheels)}", file=sys.stderr)
        return 1
    for name in files:
        print(f"  {name}")
    print(f"wheels: every package has a wheel for {target} ({len(files)} wheels)")
    stamp.write_text(digest.hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
