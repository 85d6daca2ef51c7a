"""Contracts between the code, the state machine, the template and the image."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
import uuid
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from handler import STEPS
from handler.aws.dispatch import SCHEDULED_STEPS
from steps.shared.errors import transient_error_names
from tests.conftest import CONFIGS, ROOT, SAMPLES

ASL = json.loads((ROOT / "statemachine.asl.json").read_text())
LAMBDA_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


def _tasks() -> dict[str, dict]:
    """The Lambda tasks (the handler's steps); the EMR Serverless one is checked apart."""
    return {
        name: s
        for name, s in ASL["States"].items()
        if s["Type"] == "Task" and s["Resource"] == "arn:aws:states:::lambda:invoke"
    }


def test_every_step_has_a_task_and_every_task_a_step():
    # Scheduled steps (freshness) are invoked by a schedule in the template, not by a state.
    steps = {t["Parameters"]["Payload"]["step"] for t in _tasks().values()}
    assert steps == set(STEPS) - set(SCHEDULED_STEPS)


def test_every_scheduled_step_has_a_schedule_that_invokes_the_function_with_it():
    import yaml

    from tests.test_workflow import _CloudFormationLoader

    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CloudFormationLoader)
    function = template["Resources"]["RefloadFunction"]["Properties"]
    schedules = [e["Properties"] for e in function["Events"].values() if e["Type"] == "ScheduleV2"]
    scheduled = {json.loads(s["Input"])["step"] for s in schedules}
    assert scheduled == set(SCHEDULED_STEPS)
    by_step = {json.loads(s["Input"])["step"]: s for s in schedules}
    freshness, digest = by_step["freshness"], by_step["digest"]
    assert digest["ScheduleExpression"] == {"Ref": "DigestSchedule"}
    assert template["Parameters"]["DigestSchedule"]["Default"] == "cron(0 7 * * ? *)"
    assert freshness["ScheduleExpression"] == {"Ref": "FreshnessSchedule"}
    assert template["Parameters"]["FreshnessSchedule"]["Default"] == "rate(1 hour)"


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
    # SparkIngestResult only follows SparkIngest: starting at ingest reaches it.
    assert targets == {name for name in _tasks() if name != "SparkIngestResult"}


def test_a_spark_table_runs_on_emr_serverless_then_continues_as_any_other():
    states = ASL["States"]
    choice = states[states["Ingest"]["Next"]]
    assert [r["Next"] for r in choice["Choices"]] == ["Ignored", "SparkIngest"]
    assert choice["Default"] == "Load"
    spark = states["SparkIngest"]
    assert spark["Resource"] == "arn:aws:states:::emr-serverless:startJobRun.sync"
    assert spark["ResultPath"] is None  # the state (the hand-off) goes on to the next step
    assert spark["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "IngestFailed"}
    ]
    assert (spark["Next"], states["SparkIngestResult"]["Next"]) == ("SparkIngestResult", "Load")
    # Only this step reads the job's result: a re-run of the state from Ingest runs the job again.
    assert states["SparkIngestResult"]["Parameters"]["Payload"] == {
        "step": "ingest",
        "state.$": "$",
        "execution_id.$": "$$.Execution.Id",
        "spark_result_uri.$": "$.spark_job.result_uri",
    }


# Local-only modules: what they import is an optional extra the image leaves out.
NOT_IN_LAMBDA = {"steps/ingest/frames.py": {"pandas"}, "steps/ingest/spark.py": {"pyspark"}}
# Modules that import what the image keeps in its own folder (REFLOAD_PANDAS_SITE), on
# sys.path only for the tables that need it.
FROM_OWN_SITE = {"steps/ingest/hooks.py": {"pandas"}}


def _imports(folder: str, *, lambda_only: bool = True) -> set[str]:
    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        if lambda_only and path.relative_to(ROOT).as_posix() in NOT_IN_LAMBDA | FROM_OWN_SITE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"handler", "steps"}


def _with_dependencies(requirements: list[str]) -> set[str]:
    """The distributions these requirements bring, with their dependencies."""
    wanted = [Requirement(r) for r in requirements]
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


def _installed_by_image() -> set[str]:
    """Distributions `pip install ".[extras]"` in the Dockerfile brings, with their deps."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    [extras] = re.findall(r'pip install [^\n]*-c constraints\.txt "\.\[([a-z,]+)\]"', dockerfile)
    return _with_dependencies([str(r) for r in _project_requirements(tuple(extras.split(",")))])


def _installed_in_own_site() -> set[str]:
    """Distributions the Dockerfile installs into REFLOAD_PANDAS_SITE, with their deps."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    [packages] = re.findall(
        r'pip install [^\n]*-c constraints\.txt --target "\$\{REFLOAD_PANDAS_SITE\}" ([\w ]+)',
        dockerfile,
    )
    assert "ENV REFLOAD_PANDAS_SITE=/opt/" in dockerfile
    return _with_dependencies(packages.split())


def test_the_image_installs_everything_the_handler_imports():
    installed = _installed_by_image()
    distributions = metadata.packages_distributions()
    for module in sorted(_imports("handler") | _imports("steps")):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        assert names & installed, f"{module} is imported but the Dockerfile does not install it"
    own_site = _installed_in_own_site()
    for modules in FROM_OWN_SITE.values():
        for module in modules:
            names = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
            assert names & own_site and not names & installed, module


@pytest.mark.slow
def test_only_the_local_modules_import_what_the_image_leaves_out():
    for module, extras in (NOT_IN_LAMBDA | FROM_OWN_SITE).items():
        assert extras <= _imports(module.split("/")[0], lambda_only=False)
        assert not extras & (_imports("handler") | _imports("steps")), module


def test_the_image_runs_only_runtime_code_with_pinned_versions():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "FROM public.ecr.aws/lambda/python:3." in dockerfile
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M)
    assert copied == ["constraints.txt pyproject.toml README.md", "handler/", "steps/", "hooks/"]
    assert 'CMD ["handler.lambda_handler"]' in dockerfile
    # /var/task is read-only: without bytecode built in, every cold start compiles.
    assert "python -m compileall -q handler steps hooks" in dockerfile
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
    # Every `pip install` in the Dockerfile: refload with its extras, pandas for hooks.
    assert check_wheels.image_requirements() == [
        *(str(r) for r in _project_requirements(extras=("postgres", "redshift", "lineage"))),
        "pandas",
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


TEMPLATE = cfn_yaml.load(str(ROOT / "template.yaml"))
RESOURCES = TEMPLATE["Resources"]


def _parameters(**given: str) -> dict[str, Any]:
    """The template's parameter values: defaults, then the given ones (lists split)."""
    values: dict[str, Any] = {}
    for name, spec in TEMPLATE["Parameters"].items():
        value = given.get(name, spec.get("Default", ""))
        values[name] = value.split(",") if spec["Type"] == "CommaDelimitedList" else value
    return values


def _evaluate(node: Any, values: dict[str, Any], conditions: dict[str, bool]) -> Any:
    """The condition functions (and the Ref / Join they use) as CloudFormation does them."""
    if isinstance(node, dict) and len(node) == 1:
        [(function, arguments)] = node.items()
        if function == "Ref":
            return values[arguments]
        if function == "Condition":
            return conditions[arguments]
        args = [_evaluate(a, values, conditions) for a in arguments]
        if function == "Fn::Join":
            return args[0].join(args[1])
        if function == "Fn::Equals":
            return args[0] == args[1]
        if function == "Fn::Not":
            return not args[0]
        if function == "Fn::And":
            return all(args)
        if function == "Fn::Or":
            return any(args)
        raise AssertionError(f"not evaluated here: {function}")
    return node


def _conditions(**given: str) -> dict[str, bool]:
    values = _parameters(**given)
    conditions: dict[str, bool] = {}
    for name, rule in TEMPLATE["Conditions"].items():  # each refers only to earlier ones
        conditions[name] = _evaluate(rule, values, conditions)
    return conditions


def _created(**given: str) -> set[str]:
    conditions = _conditions(**given)
    return {n for n, r in RESOURCES.items() if "Condition" not in r or conditions[r["Condition"]]}


def _chosen(node: Any, conditions: dict[str, bool]) -> Any:
    """A value with its Fn::If resolved (None for AWS::NoValue)."""
    if isinstance(node, dict) and "Fn::If" in node:
        name, yes, no = node["Fn::If"]
        chosen = _chosen(yes if conditions[name] else no, conditions)
        return None if chosen == {"Ref": "AWS::NoValue"} else chosen
    return node


def _statements(document: Any, conditions: dict[str, bool]) -> list[dict]:
    document = _chosen(document, conditions)
    if document is None:
        return []
    statements = document.get("Statement", [])
    statements = [statements] if isinstance(statements, dict) else list(statements)
    return [c for c in (_chosen(s, conditions) for s in statements) if c is not None]


def _function_statements(conditions: dict[str, bool]) -> list[dict]:
    """The statements of the function's role (its own: SAM generates none)."""
    found = []
    for policy in RESOURCES["FunctionRole"]["Properties"]["Policies"]:
        found += _statements(policy["PolicyDocument"], conditions)
    return found


def _managed_policies(conditions: dict[str, bool]) -> list[str]:
    arns = RESOURCES["FunctionRole"]["Properties"]["ManagedPolicyArns"]
    return [
        str(a["Fn::Sub"]).rsplit("/", 1)[1] for a in (_chosen(x, conditions) for x in arns) if a
    ]


def _actions(statement: dict) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)


def _resources(statement: dict) -> list[Any]:
    resources = statement["Resource"]
    return list(resources) if isinstance(resources, list) else [resources]


LAMBDA_MAX_TIMEOUT = 900  # seconds: AWS Lambda's limit, and the template's MaxValue


def test_every_task_times_out_after_the_function_and_the_execution_after_every_retry():
    function_timeout = TEMPLATE["Parameters"]["FunctionTimeoutSeconds"]
    assert function_timeout["MaxValue"] == LAMBDA_MAX_TIMEOUT
    worst_case = 0
    for name, task in _tasks().items():
        timeout = task["TimeoutSeconds"]
        # Step Functions cannot stop a running invocation: a Task that gave up first would
        # leave the step running (a load committing after Notify reported it failed). So
        # the function's own timeout fires first and its error reaches the Catch; the
        # Task's only ends an invocation Lambda lost.
        assert function_timeout["MaxValue"] < timeout <= function_timeout["MaxValue"] + 120, name
        [retry] = task["Retry"]
        attempts = 1 + retry["MaxAttempts"]
        worst_case += attempts * timeout + retry["MaxAttempts"] * retry["MaxDelaySeconds"]
    spark = ASL["States"]["SparkIngest"]  # a job's own time limit, with its retries
    [retry] = spark["Retry"]
    worst_case += (1 + retry["MaxAttempts"]) * spark["TimeoutSeconds"] + retry[
        "MaxAttempts"
    ] * retry["MaxDelaySeconds"]
    # A whole execution (every Task, each with every retry) ends within the state machine's
    # timeout, so a timed-out execution means something is stuck (and alarms).
    assert worst_case <= ASL["TimeoutSeconds"] <= worst_case * 1.1


ALARMED_METRICS = {
    ("AWS/States", "ExecutionsFailed"),
    ("AWS/States", "ExecutionsTimedOut"),
    ("AWS/States", "ExecutionsAborted"),
    ("AWS/Lambda", "Errors"),
    ("AWS/Lambda", "Throttles"),
    ("refload", "ChecksFailed"),  # the steps' EMF metric, summed over its Step series
    ("AWS/Events", "FailedInvocations"),  # a landed file whose execution never started
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),  # ... and waits in the DLQ
}
RULE_NAME = {"Fn::Sub": "${AWS::StackName}-raw-object-created"}


def _watched(alarm: dict) -> list[dict]:
    """The metrics an alarm reads: its one metric, or those of its metric math."""
    props = alarm["Properties"]
    if "Metrics" in props:
        return [m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m]
    return [props]


@pytest.mark.parametrize(
    ("given", "topic"),
    [
        ({"AlarmEmail": "oncall@example.com"}, {"Ref": "AlarmTopic"}),
        ({"AlarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:pager"}, {"Ref": "AlarmTopicArn"}),
    ],
)
def test_every_alarm_reaches_someone(given: dict[str, str], topic: dict):
    conditions = _conditions(**given)
    created = _created(**given)
    alarms = {n: r for n, r in RESOURCES.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    metrics = {(m["Namespace"], m["MetricName"]) for a in alarms.values() for m in _watched(a)}
    assert metrics == ALARMED_METRICS
    for name, alarm in alarms.items():
        assert name in created
        [action] = alarm["Properties"]["AlarmActions"]
        assert _chosen(action, conditions) == topic, name
        for metric in _watched(alarm):
            [dimension] = metric["Dimensions"]
            assert dimension["Value"] in (
                {"Ref": "RefloadStateMachine"},
                {"Ref": "RefloadFunction"},
                "load",  # ChecksFailed by Step: the tests load runs before publishing,
                "validate",  # and those validate runs after
                RULE_NAME,
                {"Fn::GetAtt": ["EventDeadLetterQueue", "QueueName"]},
            )
    if "AlarmEmail" in given:
        assert {"AlarmTopic", "AlarmEmailSubscription"} <= created
        subscription = RESOURCES["AlarmEmailSubscription"]["Properties"]
        assert subscription["Protocol"] == "email"
        assert subscription["Endpoint"] == {"Ref": "AlarmEmail"}
        assert _chosen(subscription["TopicArn"], conditions) == topic
    else:
        assert "AlarmTopic" not in created
    # A stack with neither is refused at deploy time.
    [assertion] = TEMPLATE["Rules"]["AlarmsReachSomeone"]["Assertions"]
    refs = re.findall(r"'Ref': '(\w+)'", str(assertion["Assert"]))
    assert sorted(refs) == ["AlarmEmail", "AlarmTopicArn"] and "Fn::Or" in assertion["Assert"]


VPC = {
    "SubnetIds": "subnet-0a1b2c3d4e5f60001,subnet-0a1b2c3d4e5f60002",
    "SecurityGroupIds": "sg-0a1b2c3d4e5f60003",
    "VpcId": "vpc-0a1b2c3d4e5f60004",
    "RouteTableIds": "rtb-0a1b2c3d4e5f60005",
    "WarehouseSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:wh",
    "AlertEmailFrom": "refload@example.com",
    "RedshiftClusterIdentifier": "analytics",
    "RedshiftDbUser": "refload",
    "RedshiftDatabase": "dev",
}
ENDPOINT_SERVICES = {"s3", "secretsmanager", "email", "redshift"}


def _endpoints(created: set[str]) -> dict[str, str]:
    """Endpoint resource -> service (the last part of com.amazonaws.REGION.SERVICE)."""
    return {
        name: r["Properties"]["ServiceName"]["Fn::Sub"].rsplit(".", 1)[1]
        for name, r in RESOURCES.items()
        if r["Type"] == "AWS::EC2::VPCEndpoint" and name in created
    }


def test_the_function_runs_in_the_vpc_with_endpoints_when_given_subnets():
    function = RESOURCES["RefloadFunction"]["Properties"]
    outside = _conditions()
    assert _chosen(function["VpcConfig"], outside) is None
    assert not _endpoints(_created())
    assert not any(a.startswith("ec2:") for s in _function_statements(outside) for a in _actions(s))

    inside = _conditions(**VPC)
    vpc_config = _chosen(function["VpcConfig"], inside)
    assert vpc_config["SubnetIds"] == {"Ref": "SubnetIds"}
    groups = str(_chosen(vpc_config["SecurityGroupIds"], inside))
    assert "'Ref': 'SecurityGroupIds'" in groups and "'Ref': 'FunctionSecurityGroup'" in groups
    assert _chosen(
        vpc_config["SecurityGroupIds"], _conditions(**{**VPC, "SecurityGroupIds": ""})
    ) == [{"Ref": "FunctionSecurityGroup"}]
    # Attaching to subnets needs the network-interface permissions: Lambda's managed
    # policy, only in a VPC.
    assert _managed_policies(outside) == ["AWSLambdaBasicExecutionRole"]
    assert _managed_policies(inside) == [
        "AWSLambdaBasicExecutionRole",
        "AWSLambdaVPCAccessExecutionRole",
    ]

    created = _created(**VPC)
    endpoints = _endpoints(created)
    assert set(endpoints.values()) == ENDPOINT_SERVICES
    for name, service in endpoints.items():
        properties = RESOURCES[name]["Properties"]
        if service == "s3":
            assert properties["VpcEndpointType"] == "Gateway"
            assert properties["RouteTableIds"] == {"Ref": "RouteTableIds"}
        else:
            assert properties["VpcEndpointType"] == "Interface" and properties["PrivateDnsEnabled"]
            assert properties["SubnetIds"] == {"Ref": "SubnetIds"}
            assert properties["SecurityGroupIds"] == [{"Ref": "EndpointSecurityGroup"}]
    [ingress] = RESOURCES["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert (ingress["FromPort"], ingress["ToPort"]) == (443, 443)
    assert ingress["SourceSecurityGroupId"] == {"Ref": "FunctionSecurityGroup"}

    serverless = {**VPC, "RedshiftClusterIdentifier": "", "RedshiftWorkgroupArn": "arn:wg"}
    assert "redshift-serverless" in _endpoints(_created(**serverless)).values()
    # With a NAT gateway (or endpoints the VPC already has), none are made.
    assert not _endpoints(_created(**{**VPC, "VpcEndpoints": "none"}))


def _all_statements(conditions: dict[str, bool]) -> list[dict]:
    """Every statement of every role: IAM roles' policies and SAM resources' inline ones."""
    found = []
    for resource in RESOURCES.values():
        for policy in resource.get("Properties", {}).get("Policies", []):
            policy = _chosen(policy, conditions)
            if policy and "PolicyDocument" in policy:
                found += _statements(policy["PolicyDocument"], conditions)
            elif policy and "Statement" in policy:
                found += _statements(policy, conditions)
    return found


def test_the_function_cannot_change_acls_or_lifecycles():
    function = RESOURCES["RefloadFunction"]["Properties"]
    # Its own role, no SAM policy templates: S3ReadPolicy also grants lifecycle reads, and
    # S3WritePolicy / S3CrudPolicy s3:PutObjectAcl and s3:PutLifecycleConfiguration.
    assert function["Role"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}
    assert "Policies" not in function
    actions = {a for s in _all_statements(_conditions(**VPC)) for a in _actions(s)}
    assert "s3:PutObject" in actions
    assert not {"s3:PutObjectAcl", "s3:PutLifecycleConfiguration", "s3:*"} & actions


@pytest.mark.parametrize(
    "given",
    [VPC, {**VPC, "RedshiftClusterIdentifier": "", "RedshiftWorkgroupArn": "arn:wg"}],
    ids=["cluster", "serverless"],
)
def test_ses_and_redshift_permissions_name_their_resources(given: dict[str, str]):
    expected_resources = {
        "ses:": {"identity/${AlertEmailFrom}", "identity/${Domain}"},
        "redshift:": {
            "dbuser:${RedshiftClusterIdentifier}/${RedshiftDbUser}",
            "dbname:${RedshiftClusterIdentifier}/${RedshiftDatabase}",
        },
        "redshift-serverless:": {"{'Ref': 'RedshiftWorkgroupArn'}"},
    }
    seen = set()
    for statement in _all_statements(_conditions(**given)):
        for action in _actions(statement):
            prefix = action.split(":")[0] + ":"
            if prefix not in expected_resources:
                continue
            seen.add(prefix)
            for resource in _resources(statement):
                assert resource != "*", action
                text = str(resource)
                assert any(r in text for r in expected_resources[prefix]), (action, text)
    assert seen == {
        "ses:",
        "redshift-serverless:" if "RedshiftWorkgroupArn" in given else "redshift:",
    }
    # Nothing to grant when nothing is given.
    assert not any(
        a.split(":")[0] in {"ses", "redshift", "redshift-serverless"}
        for s in _all_statements(_conditions())
        for a in _actions(s)
    )


def test_only_redshift_in_this_account_can_assume_the_copy_role():
    trust = RESOURCES["RedshiftCopyRole"]["Properties"]["AssumeRolePolicyDocument"]
    [statement] = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRole"
    assert set(statement["Principal"]["Service"]) == {
        "redshift.amazonaws.com",
        "redshift-serverless.amazonaws.com",
    }
    # The confused-deputy guard Redshift documents for its service principals.
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    }


def test_the_readme_builds_one_x86_64_image_manifest():
    readme = (ROOT / "docs" / "aws.md").read_text()  # the README's deployment page
    [build] = re.findall(r"^docker build .*$", readme, flags=re.M)
    # Lambda rejects an OCI image index (buildx makes one for its provenance attestation)
    # and runs the template's architecture.
    assert "--platform linux/amd64" in build and "--provenance=false" in build
    assert "Architectures: [x86_64]" in (ROOT / "template.yaml").read_text()


def test_curated_files_are_kept_as_long_as_rollback_may_reach_back():
    rules = RESOURCES["CuratedBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    expiring = [r for r in rules if "ExpirationInDays" in r]
    assert [r["ExpirationInDays"] for r in expiring] == [{"Ref": "CuratedRetentionDays"}]
    assert TEMPLATE["Parameters"]["CuratedRetentionDays"]["Default"] == 400
    # The rollback command's message names the parameter users raise.
    assert (
        "CuratedRetentionDays"
        in (ROOT / "handler" / "cli" / "commands" / "rollback.py").read_text()
    )
    assert "CuratedRetentionDays" in (ROOT / "docs" / "operations.md").read_text()


# --- the function's role, enforced: every step runs with exactly its statements ---------

# What the template's Refs and GetAtts resolve to in the test account.
TEST_NAMES = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "refload",
    "RawBucket": "refload-raw",
    "ConfigBucket": "refload-config",
    "CuratedBucket": "refload-curated",
}
_NO_VALUE = object()


def _render(node: Any, values: dict[str, Any], conditions: dict[str, bool]) -> Any:
    """A template value made concrete: Fn::If, Ref, GetAtt (a bucket's Arn), Sub, Select
    and Split, as CloudFormation resolves them; AWS::NoValue entries dropped."""
    if isinstance(node, list):
        items = [_render(n, values, conditions) for n in node]
        return [i for i in items if i is not _NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        [(function, argument)] = node.items()
        if function == "Fn::If":
            name, yes, no = argument
            return _render(yes if conditions[name] else no, values, conditions)
        if function == "Ref":
            return _NO_VALUE if argument == "AWS::NoValue" else values[argument]
        if function == "Fn::GetAtt":
            resource, attribute = argument
            assert attribute == "Arn" and resource.endswith("Bucket"), argument
            return f"arn:aws:s3:::{values[resource]}"
        if function == "Fn::Sub":
            text, local = (argument, {}) if isinstance(argument, str) else argument
            local = {k: _render(v, values, conditions) for k, v in local.items()}

            def variable(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in local:
                    return str(local[name])
                if name.endswith(".Arn"):
                    return str(_render({"Fn::GetAtt": name.split(".")}, values, conditions))
                return str(values[name])

            return re.sub(r"\$\{([\w:.]+)\}", variable, text)
        if function == "Fn::Select":
            index, items = _render(argument, values, conditions)
            return items[int(index)]
        if function == "Fn::Split":
            separator, text = _render(argument, values, conditions)
            return text.split(separator)
    rendered = {k: _render(v, values, conditions) for k, v in node.items()}
    return {k: v for k, v in rendered.items() if v is not _NO_VALUE}


def _function_policy(**given: str) -> dict[str, Any]:
    """The function role's inline policy, rendered for these parameters."""
    values = {**_parameters(**given), **TEST_NAMES}
    [policy] = RESOURCES["FunctionRole"]["Properties"]["Policies"]
    document = _render(policy["PolicyDocument"], values, _conditions(**given))
    assert isinstance(document, dict)
    return document


def _as_moto_enforces(document: dict[str, Any], used: dict[str, str]) -> dict[str, Any]:
    """The policy moto is given. moto matches resources for S3 only (SES and Secrets
    Manager requests are checked against "*"): for those statements, this first asserts
    that the rendered resources name exactly the ARN the steps use, then widens them."""
    statements = []
    for statement in document["Statement"]:
        actions = _actions(statement)
        if all(a.startswith("s3:") for a in actions):
            statements.append(statement)
            continue
        service = actions[0].split(":")[0]
        assert used[service] in _resources(statement), (statement["Sid"], used[service])
        statements.append({**statement, "Resource": "*"})
    return {**document, "Statement": statements}


SENDER = "refload@example.com"
CURRENCY_KEY = "currency/2026-11-01/iso4217.csv"
OPEN_INCIDENT = "_refload/incidents/infrastructure/open.json"


def _steps_with(policy: dict[str, Any], credentials: dict[str, str]) -> list[str]:
    """Every step of one landed file (ingest, load, validate; notify; the freshness
    schedule) as the function runs them with these credentials; what was refused."""
    import boto3
    from moto.core.authorization import enable_iam_authentication

    from handler import lambda_handler
    from steps.shared.errors import RefloadError
    from steps.shared.io import storage

    iam = boto3.client("iam", **credentials)
    user = f"refload-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="refload", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    as_function = {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }
    import structlog

    refused: list[str] = []
    event = json.loads((ROOT / "tests" / "events" / "eventbridge_object_created.json").read_text())
    event["detail"]["bucket"]["name"] = TEST_NAMES["RawBucket"]
    event["detail"]["object"]["key"] = CURRENCY_KEY
    saved = {name: os.environ.get(name) for name in as_function}
    os.environ.update(as_function)
    # Clients made again, with the function's credentials (boto3's default session keeps
    # the credentials it found first).
    boto3.DEFAULT_SESSION = None
    storage.set_s3_client(None)
    try:
        with enable_iam_authentication():
            state: dict[str, Any] = event  # the rule's input: ingest routes its key
            for step in ("ingest", "load", "validate"):
                try:
                    # What a step only warns about (closing the fleet incident never
                    # fails a run) is refused all the same when access was denied.
                    with structlog.testing.capture_logs() as logged:
                        state = lambda_handler(
                            state if step == "ingest" else {**state, "step": step}, None
                        )
                    refused += [
                        f"{step}: {e['event']}: {e['error']}"
                        for e in logged
                        if e.get("log_level") == "warning" and "AccessDenied" in str(e)
                    ]
                except RefloadError as error:
                    refused.append(f"{step}: {error.message}")
                    state = {**state, "failed_step": step, "error": error.to_dict()}
                    break
            failure = {"Error": "QualityCheckFailed", "Cause": "{}"}
            try:
                notified = lambda_handler({**state, "step": "notify", "failure": failure}, None)
                refused += [f"notify: {n}" for n in notified["failed_channels"]]
            except RefloadError as error:
                refused.append(f"notify: {error.message}")
            try:
                lambda_handler({"step": "freshness"}, None)
            except RefloadError as error:
                refused.append(f"freshness: {error.message}")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        boto3.DEFAULT_SESSION = None
        storage.set_s3_client(None)
    return refused


@pytest.fixture
def function_account(warehouse_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """moto with the template's buckets, a config, a landed file, a verified sender and the
    warehouse's credentials in a secret; the function's environment as the template sets it."""
    from urllib.parse import urlsplit

    import boto3
    from moto import mock_aws

    credentials = {"region_name": "us-east-1"}
    from tests.conftest import fake_aws_credentials

    fake_aws_credentials(monkeypatch)
    with mock_aws():
        s3 = boto3.client("s3", **credentials)
        for bucket in ("RawBucket", "ConfigBucket", "CuratedBucket"):
            s3.create_bucket(Bucket=TEST_NAMES[bucket])
        s3.put_bucket_versioning(
            Bucket=TEST_NAMES["RawBucket"], VersioningConfiguration={"Status": "Enabled"}
        )
        for path in ("dim_currency.json", "mappings/currency_mapping.csv"):
            s3.put_object(
                Bucket=TEST_NAMES["ConfigBucket"],
                Key=f"tables/{path}",
                Body=(CONFIGS / path).read_bytes(),
            )
        source = next((SAMPLES / "currency").glob("*/*")).read_bytes()
        s3.put_object(Bucket=TEST_NAMES["RawBucket"], Key=CURRENCY_KEY, Body=source)
        # An outage an earlier run recorded: this run reaches the warehouse and closes it.
        s3.put_object(Bucket=TEST_NAMES["CuratedBucket"], Key=OPEN_INCIDENT, Body=b"{}")
        boto3.client("ses", **credentials).verify_email_identity(EmailAddress=SENDER)
        # The warehouse's user and password live in the secret, not in the URL.
        parts = urlsplit(warehouse_url)
        secret = boto3.client("secretsmanager", **credentials).create_secret(
            Name="refload/warehouse",
            SecretString=json.dumps({"username": parts.username, "password": parts.password}),
        )["ARN"]
        url = (
            f"redshift://{parts.hostname}:{parts.port}{parts.path}?{parts.query}"
            f"&secret_arn={secret}&region=us-east-1"
        )
        for name, value in {
            "REFLOAD_WAREHOUSE_URL": url,
            "REFLOAD_CONFIG_ROOT": f"s3://{TEST_NAMES['ConfigBucket']}/tables/",
            "REFLOAD_CURATED_ROOT": f"s3://{TEST_NAMES['CuratedBucket']}",
            "REFLOAD_RAW_ROOT": f"s3://{TEST_NAMES['RawBucket']}/",
            "REFLOAD_INCIDENT_ROOT": f"s3://{TEST_NAMES['CuratedBucket']}/_refload/incidents/",
            "REFLOAD_ALERT_CHANNELS": "ses",
            "REFLOAD_ALERT_EMAIL_FROM": SENDER,
            "REFLOAD_ALERT_EMAIL_TO": "data-oncall@example.com",
        }.items():
            monkeypatch.setenv(name, value)
        given = {"AlertEmailFrom": SENDER, "WarehouseSecretArn": secret}
        used = {
            "ses": f"arn:aws:ses:us-east-1:123456789012:identity/{SENDER}",
            "secretsmanager": secret,
        }
        yield given, used, credentials


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", ["redshift"], indirect=True)
def test_every_step_runs_with_exactly_the_function_roles_statements(function_account, sql):
    given, used, credentials = function_account
    policy = _as_moto_enforces(_function_policy(**given), used)
    assert _steps_with(policy, credentials) == []
    # What the steps did with those rights: the table published (COPY's manifest was
    # written and its object read back), tests recorded, the alert sent through SES.
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    assert sql("SELECT COUNT(*) FROM public.dim_currency") == [(178,)]
    assert sql("SELECT COUNT(*) FROM etl_audit.data_quality_tests") == [(5,)]
    recovered, mail = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    assert "dim_currency" in str(mail.raw_data)
    # The outage an earlier run recorded is over: said once, and its markers are gone.
    assert "reachable again" in str(recovered.raw_data)
    import boto3

    objects = boto3.client("s3", **credentials).list_objects_v2(
        Bucket=TEST_NAMES["CuratedBucket"], Prefix="_refload/incidents/"
    )
    assert objects.get("KeyCount") == 0, objects.get("Contents")


# Each statement the run needs -> where its absence is refused.
NEEDED = {
    "ReadSources": "ingest: ",
    "ReadConfigs": "ingest: ",
    "ListBuckets": "ingest: ",  # routing lists the config bucket
    "CuratedFiles": "ingest: ",
    "CuratedBucketRegion": "load: ",
    "WarehouseSecret": "load: ",
    "SendAlertEmail": "notify: ",
    "IncidentMarkers": "validate: ",  # a passing run closes the fleet's incident
}


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", ["redshift"], indirect=True)
@pytest.mark.parametrize("removed", NEEDED)
def test_without_any_one_statement_a_step_is_refused(removed, function_account):
    given, used, credentials = function_account
    policy = _as_moto_enforces(_function_policy(**given), used)
    sids = [s["Sid"] for s in policy["Statement"]]
    assert sorted(sids) == sorted(NEEDED)  # every statement this run renders is needed
    policy["Statement"] = [s for s in policy["Statement"] if s["Sid"] != removed]
    refused = _steps_with(policy, credentials)
    assert refused, f"nothing needed {removed}"
    assert refused[0].startswith(NEEDED[removed]), refused
    assert re.search(r"access denied|AccessDenied|\b403\b", refused[0], re.I), refused


def test_a_passed_role_goes_only_to_the_service_that_runs_as_it():
    # The function passes no role (COPY names the Redshift role, which the cluster holds).
    spark = _conditions(SparkEngine="create")
    assert not [s for s in _function_statements(spark) if "iam:PassRole" in _actions(s)]
    passing = [s for s in _all_statements(spark) if "iam:PassRole" in _actions(s)]
    assert passing
    for statement in passing:
        assert _actions(statement) == ["iam:PassRole"]
        assert statement["Resource"] == {"Fn::GetAtt": ["SparkJobRole", "Arn"]}
        assert statement["Condition"] == {
            "StringEquals": {"iam:PassedToService": "emr-serverless.amazonaws.com"}
        }


def _lint_template():
    spec = importlib.util.spec_from_file_location(
        "lint_template", ROOT / "scripts/lint_template.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_undelivered_event_is_retried_then_kept_in_a_dead_letter_queue():
    # As CloudFormation creates it: the SAM transform's rule and its target.
    translated = _lint_template().translate(ROOT / "template.yaml")["Resources"]
    [rule] = [r["Properties"] for r in translated.values() if r["Type"] == "AWS::Events::Rule"]
    assert rule["Name"] == RULE_NAME
    [target] = rule["Targets"]
    assert target["Arn"] == {"Ref": "RefloadStateMachine"}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["EventDeadLetterQueue", "Arn"]}}
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 3600}
    # Only this rule may put events into the queue, kept as long as SQS keeps anything.
    queue = RESOURCES["EventDeadLetterQueue"]["Properties"]
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 3600
    [statement] = RESOURCES["EventDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"][
        "Statement"
    ]
    assert (statement["Principal"], statement["Action"]) == (
        {"Service": "events.amazonaws.com"},
        "sqs:SendMessage",
    )
    source = statement["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    assert source.endswith(":rule/" + RULE_NAME["Fn::Sub"])
    # Both the rule's failures and the queue's depth page someone.
    alarms = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    watched = {(a.get("MetricName"), str(a.get("Dimensions"))) for a in alarms}
    assert ("FailedInvocations", str([{"Name": "RuleName", "Value": RULE_NAME}])) in watched
    queue_depth = [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["EventDeadLetterQueue", "QueueName"]}}
    ]
    assert ("ApproximateNumberOfMessagesVisible", str(queue_depth)) in watched


@pytest.mark.parametrize(
    ("given", "reserved"), [("", None), ("20", {"Ref": "FunctionReservedConcurrency"})]
)
def test_the_functions_reserved_concurrency_is_a_parameter(given: str, reserved: Any):
    function = RESOURCES["RefloadFunction"]["Properties"]
    conditions = _conditions(FunctionReservedConcurrency=given)
    assert _chosen(function["ReservedConcurrentExecutions"], conditions) == reserved
    assert TEMPLATE["Parameters"]["FunctionReservedConcurrency"]["Default"] == ""


@pytest.mark.slow
def test_the_sam_transform_is_linted_deeply(tmp_path: Path):
    # cfn-lint alone checks SAM resources against SAM's schema; after the transform it
    # checks the CloudFormation they become (a retry policy past EventBridge's 185 tries).
    assert ".venv/bin/python scripts/lint_template.py\n" in (ROOT / "scripts/test.sh").read_text()
    text = (ROOT / "template.yaml").read_text()
    assert "MaximumRetryAttempts: 185\n" in text
    broken = tmp_path / "template.yaml"
    broken.write_text(text.replace("MaximumRetryAttempts: 185\n", "MaximumRetryAttempts: 500\n"))
    (tmp_path / "statemachine.asl.json").write_text("{}")
    lint = subprocess.run(
        [sys.executable, str(ROOT / "scripts/lint_template.py"), str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 1, lint.stdout
    assert "E3034 500 is greater than the maximum of 185" in lint.stdout + lint.stderr
    # The function has the role the template gives it, and SAM adds none of its own.
    translated = _lint_template().translate(ROOT / "template.yaml")["Resources"]
    [function] = [r for r in translated.values() if r["Type"] == "AWS::Lambda::Function"]
    assert function["Properties"]["Role"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}
    assert "RefloadFunctionRole" not in translated


def test_the_tests_run_on_the_images_python():
    # The suite vouches for what the image runs, so it runs on the base's Python (scripts/
    # setup.sh dev builds it with scripts/install_python.sh when the machine has none), not on
    # whatever python3 the machine has.
    image = _wheel_check().image_python()
    running = "{}.{}".format(*sys.version_info[:2])
    assert running == image, f"the tests ran on Python {sys.version}; the image has {image}"
    # A laptop may run the CLI and the demo on an older Python: lint and type checks hold the
    # code to the oldest one pyproject admits.
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert floor == f">={tool['mypy']['python_version']}"
    assert tool["ruff"]["target-version"] == "py" + tool["mypy"]["python_version"].replace(".", "")
    assert image in SpecifierSet(floor)
