"""Contracts between the code, the state machine, the template and the image."""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement

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
    assert dockerfile.startswith("# ") and "FROM public.ecr.aws/lambda/python:3.11" in dockerfile
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M)
    assert copied == ["constraints.txt pyproject.toml README.md", "handler/", "steps/"]
    assert 'CMD ["handler.lambda_handler"]' in dockerfile
    # /var/task is read-only: without bytecode built in, every cold start compiles.
    assert "python -m compileall -q handler steps" in dockerfile
    pins = (ROOT / "constraints.txt").read_text().split()
    for package in ("pyarrow", "duckdb", "boto3", "redshift-connector", "psycopg", "pydantic"):
        assert any(re.match(rf"{package.replace('-', '[-_]')}==", p, re.I) for p in pins), package
