"""Contracts between the code, the state machine, the template and the image."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from handler import STEPS
from steps.errors import transient_error_names
from tests.conftest import ROOT

ASL = json.loads((ROOT / "statemachine.asl.json").read_text())
LAMBDA_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


def _tasks() -> dict[str, dict]:
    return {name: s for name, s in ASL["States"].items() if s["Type"] == "Task"}


def test_every_step_has_a_task_and_every_task_a_step():
    steps = {t["Parameters"]["Payload"]["step"] for t in _tasks().values()}
    assert steps == set(STEPS)


def test_every_task_retries_exactly_the_transient_errors_and_catches_everything():
    for name, task in _tasks().items():
        [retry] = task["Retry"]
        assert set(retry["ErrorEquals"]) == LAMBDA_ERRORS | set(transient_error_names()), name
        assert retry["BackoffRate"] > 1 and retry["JitterStrategy"] == "FULL", name
        assert [c["ErrorEquals"] for c in task["Catch"]] == [["States.ALL"]], name
        assert task["Parameters"]["FunctionName"] == "${RefloadFunctionArn}", name


def test_every_step_can_be_started_at():
    choice = ASL["States"][ASL["StartAt"]]
    targets = {rule["Next"] for rule in choice["Choices"]} | {choice["Default"]}
    assert targets == {name for name, t in _tasks().items()}


# Local-only modules: what they import is an optional extra the image leaves out.
NOT_IN_LAMBDA = {"steps/frames.py": {"pandas"}}


def _imports(folder: str, *, lambda_only: bool = True) -> set[str]:
    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        if lambda_only and path.relative_to(ROOT).as_posix() in NOT_IN_LAMBDA:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"handler", "steps"}


def _installed_by_image() -> set[str]:
    """Distributions `pip install ".[extras]"` in the Dockerfile brings, with their deps."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    [extras] = re.findall(r'pip install [^\n]*-c constraints\.txt "\.\[([a-z,]+)\]"', dockerfile)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in extras.split(","):
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        name = requirement.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for extra_requirement in metadata.requires(requirement.name) or []:
            dependency = Requirement(extra_requirement)
            if dependency.marker is None or dependency.marker.evaluate(
                {"extra": next(iter(requirement.extras), "")}
            ):
                wanted.append(dependency)
    return seen


def test_the_image_installs_everything_the_handler_imports():
    installed = _installed_by_image()
    distributions = metadata.packages_distributions()
    for module in sorted(_imports("handler") | _imports("steps")):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        assert names & installed, f"{module} is imported but the Dockerfile does not install it"


def test_only_the_local_modules_import_what_the_image_leaves_out():
    for module, extras in NOT_IN_LAMBDA.items():
        assert extras <= _imports(module.split("/")[0], lambda_only=False)
        assert not extras & (_imports("handler") | _imports("steps")), module


def test_the_image_runs_only_runtime_code_with_pinned_versions():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "FROM public.ecr.aws/lambda/python:3." in dockerfile
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M)
    assert copied == ["constraints.txt pyproject.toml README.md", "handler/", "steps/"]
    assert 'CMD ["handler.lambda_handler"]' in dockerfile
    # /var/task is read-only: without bytecode built in, every cold start compiles.
    assert "python -m compileall -q handler steps" in dockerfile
    pins = (ROOT / "constraints.txt").read_text().split()
    for package in ("pyarrow", "duckdb", "boto3", "redshift-connector", "psycopg", "pydantic"):
        assert any(re.match(rf"{package.replace('-', '[-_]')}==", p, re.I) for p in pins), package


def _wheel_check():
    spec = importlib.util.spec_from_file_location("check_wheels", ROOT / "scripts/check_wheels.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Registered first: its dataclass resolves annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_image_base_is_amazon_linux_2023_and_the_wheel_check_targets_it():
    check_wheels = _wheel_check()
    target = check_wheels.image_target()
    # Lambda's python3.12+ bases are Amazon Linux 2023 (glibc 2.34); 3.11 and older are
    # Amazon Linux 2 (glibc 2.26), where pyarrow's and duckdb's manylinux_2_28 wheels
    # do not install.
    assert target.python in {"3.12", "3.13"}
    assert target.glibc == (2, 34) and target.arch == "x86_64"
    assert target.python == check_wheels.image_python()
    platforms = target.platforms()
    assert "manylinux_2_28_x86_64" in platforms and "manylinux2014_x86_64" in platforms
    assert "manylinux_2_35_x86_64" not in platforms
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert target.python in SpecifierSet(requires)
    assert check_wheels.image_requirements() == [
        str(r) for r in _project_requirements(extras=("postgres", "redshift"))
    ]
    # CI runs the check on the image's own set.
    assert ".venv/bin/python scripts/check_wheels.py\n" in (ROOT / "scripts/test.sh").read_text()


def _project_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return found


def _fake_distribution(folder: Path, filename: str) -> None:
    """A package file pip can resolve offline: a minimal wheel, or an sdist it must refuse."""
    name, version = filename.split("-")[:2]
    if not filename.endswith(".whl"):
        (folder / filename).write_bytes(b"")
        return
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(folder / filename, "w") as wheel:
        wheel.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\n")
        wheel.writestr(f"{info}/RECORD", "")


WHEEL_CASES = [
    # (files on the index, passes, what the check says)
    (["vendorlib-1.0-cp312-cp312-manylinux_2_28_x86_64.whl"], True, "(1 wheels)"),
    (["vendorlib-1.0-cp312-abi3-manylinux2014_x86_64.whl"], True, "(1 wheels)"),
    (["vendorlib-1.0-py3-none-any.whl"], True, "(1 wheels)"),
    (["vendorlib-1.0.tar.gz"], False, "no binary wheel for CPython 3.12, glibc 2.34, x86_64"),
    (["vendorlib-1.0-cp312-cp312-manylinux_2_35_x86_64.whl", "vendorlib-1.0.tar.gz"], False, ""),
    (["vendorlib-1.0-cp312-cp312-manylinux_2_28_aarch64.whl"], False, ""),
    (["vendorlib-1.0-cp313-cp313-manylinux_2_28_x86_64.whl"], False, ""),
    (["vendorlib-1.0-cp312-cp312-musllinux_1_2_x86_64.whl"], False, ""),
]


@pytest.mark.parametrize(("files", "passes", "says"), WHEEL_CASES)
def test_the_wheel_check_refuses_sdists_and_wheels_for_another_platform(
    tmp_path: Path, files: list[str], passes: bool, says: str
):
    index = tmp_path / "index"
    index.mkdir()
    for filename in files:
        _fake_distribution(index, filename)
    pip = ["--isolated", "--no-index", f"--find-links={index}"]
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts/check_wheels.py"), "vendorlib"]
        + [f"--pip-arg={arg}" for arg in pip]
        + ["--python", "3.12", "--glibc", "2.34", "--dest", str(tmp_path / "wheels")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == (0 if passes else 1), completed.stderr
    if passes:
        assert f"every package has a wheel for CPython 3.12, glibc 2.34, x86_64 {says}" in (
            completed.stdout
        )
    else:
        assert "FAIL: no binary wheel for CPython 3.12, glibc 2.34, x86_64: vendorlib" in (
            completed.stderr
        )
