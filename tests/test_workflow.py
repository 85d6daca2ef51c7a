"""The real statemachine.asl.json, executed by moto, with the Lambda task running our handler.

moto is pinned (pyproject/constraints): these tests replace moto's
`LambdaFunction._invoke_lambda` (which would start a container) with an in-process
call of `handler.lambda_handler`, and the retrier's sleep with a recorder.
"""

from __future__ import annotations

import io
import json
import shutil
import time
import types
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws
from moto.awslambda.models import LambdaFunction
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

from handler import lambda_handler
from steps import storage
from tests.conftest import CONFIGS, ROOT, SAMPLES

CURRENCY_KEY = "currency/2026-11-01/iso4217.csv"
REGION = "us-east-1"


@dataclass
class Workflow:
    sfn: Any
    s3: Any
    arn: str
    tmp: Path
    invocations: list[str] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    on_sleep: list[Any] = field(default_factory=list)

    def run(self, event: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        execution = self.sfn.start_execution(
            stateMachineArn=self.arn, input=json.dumps(event), name=f"test-{uuid.uuid4().hex[:12]}"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = self.sfn.describe_execution(executionArn=execution["executionArn"])
            if described["status"] != "RUNNING":
                return described
            time.sleep(0.05)
        raise AssertionError("execution did not finish")

    def states(self, described: dict[str, Any]) -> list[str]:
        events = self.sfn.get_execution_history(executionArn=described["executionArn"])["events"]
        return [
            e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
        ]

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in (self.tmp / "outbox").glob("*.alert.json")]


def _in_process(workflow: Workflow):
    def invoke(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
        payload = json.loads(event) if isinstance(event, str) else event
        workflow.invocations.append(payload.get("step", "event"))
        try:
            return json.dumps(lambda_handler(payload, None), default=str), False, ""
        except Exception as error:  # what the Lambda runtime reports for an unhandled error
            body = {"errorMessage": str(error), "errorType": type(error).__name__, "stackTrace": []}
            return json.dumps(body), True, ""

    return invoke


@pytest.fixture
def workflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(configs))
    monkeypatch.setenv("REFLOAD_CURATED_ROOT", "s3://curated")
    monkeypatch.setenv("REFLOAD_WAREHOUSE_URL", f"duckdb:///{tmp_path / 'w.duckdb'}")
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in ("raw", "curated"):
            s3.create_bucket(Bucket=bucket)
        storage.set_s3_client(s3)
        role = boto3.client("iam", region_name=REGION).create_role(
            RoleName="refload", AssumeRolePolicyDocument="{}"
        )["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("handler/__init__.py", "")
        function = boto3.client("lambda", region_name=REGION).create_function(
            FunctionName="refload",
            Runtime="python3.11",
            Role=role,
            Handler="handler.lambda_handler",
            Code={"ZipFile": code.getvalue()},
        )
        definition = (
            (ROOT / "statemachine.asl.json")
            .read_text()
            .replace("${RefloadFunctionArn}", function["FunctionArn"])
        )
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = sfn.create_state_machine(name="refload", definition=definition, roleArn=role)[
            "stateMachineArn"
        ]
        flow = Workflow(sfn, s3, arn, tmp_path)
        monkeypatch.setattr(LambdaFunction, "_invoke_lambda", _in_process(flow))

        def sleep(seconds: float) -> None:
            flow.sleeps.append(seconds)
            while flow.on_sleep:
                flow.on_sleep.pop(0)()

        monkeypatch.setattr(retrier_decl, "time", types.SimpleNamespace(sleep=sleep))
        yield flow


def _object_created(key: str) -> dict[str, Any]:
    event = json.loads((ROOT / "tests" / "events" / "eventbridge_object_created.json").read_text())
    event["detail"]["object"]["key"] = key
    return event


def _land_currency(workflow: Workflow, content: bytes | None = None) -> None:
    source = next((SAMPLES / "currency").glob("*/*"))
    workflow.s3.put_object(Bucket="raw", Key=CURRENCY_KEY, Body=content or source.read_bytes())


def _count(workflow: Workflow, sql: str) -> Any:
    import duckdb

    with duckdb.connect(str(workflow.tmp / "w.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_happy_path(workflow):
    _land_currency(workflow)
    done = workflow.run(_object_created(CURRENCY_KEY))
    assert done["status"] == "SUCCEEDED", done
    assert workflow.invocations == ["ingest", "load", "validate"]
    assert workflow.states(done) == [
        "ChooseFirstStep",
        "Ingest",
        "IngestedOrIgnored",
        "Load",
        "Validate",
        "ValidationPassed",
        "Loaded",
    ]
    output = json.loads(done["output"])
    assert (output["table"], output["rows_loaded"], output["validation"]) == (
        "dim_currency",
        178,
        "passed",
    )
    assert "data" not in output and output["curated_uri"].startswith("s3://curated/")
    assert _count(workflow, "SELECT COUNT(*) FROM public.dim_currency") == [(178,)]
    assert _count(workflow, "SELECT COUNT(*), MIN(status) FROM etl_audit.data_quality_tests") == [
        (5, "pass")
    ]


def test_data_quality_failure_notifies_and_fails(workflow):
    config_path = workflow.tmp / "configs" / "dim_currency.json"
    config = json.loads(config_path.read_text())
    config["quality_tests"].append({"type": "row_count_between", "max": 100})
    config_path.write_text(json.dumps(config))
    _land_currency(workflow)
    done = workflow.run(_object_created(CURRENCY_KEY))
    assert done["status"] == "FAILED"
    assert (done["error"], done["cause"].split(";")[0]) == (
        "RefloadRunFailed",
        "A refload step failed or a data-quality test did not pass",
    )
    assert workflow.invocations == ["ingest", "load", "validate", "notify"]
    assert workflow.states(done)[-3:] == ["ValidateFailed", "Notify", "Failed"]
    [alert] = workflow.alerts()
    assert alert["failed_step"] == "validate"
    assert [c["name"] for c in alert["failed_checks"]] == ["row_count_between"]
    assert alert["failed_checks"][0]["observed"] == 178
    assert alert["run_id"] == json.loads(done["input"]).get("run_id", alert["run_id"])


def test_transient_error_is_retried_then_succeeds(workflow, monkeypatch, tmp_path):
    good = f"duckdb:///{tmp_path / 'w.duckdb'}"
    monkeypatch.setenv("REFLOAD_WAREHOUSE_URL", "postgresql://refload:x@127.0.0.1:9/down")
    # The warehouse comes back while Step Functions waits to retry.
    workflow.on_sleep.append(lambda: monkeypatch.setenv("REFLOAD_WAREHOUSE_URL", good))
    _land_currency(workflow)
    done = workflow.run(_object_created(CURRENCY_KEY))
    assert done["status"] == "SUCCEEDED", done
    assert workflow.invocations == ["ingest", "load", "load", "validate"]
    assert len(workflow.sleeps) == 1
    assert _count(workflow, "SELECT COUNT(*) FROM public.dim_currency") == [(178,)]


def test_terminal_error_is_not_retried(workflow):
    _land_currency(workflow, b"ISO 4217;;\nAlphabetic code;Numeric code;Currency\nEUR;978\n")
    done = workflow.run(_object_created(CURRENCY_KEY))
    assert done["status"] == "FAILED"
    assert workflow.invocations == ["ingest", "notify"]
    assert workflow.sleeps == []
    [alert] = workflow.alerts()
    assert alert["error"]["type"] == "RejectedInput"
    assert alert["error"]["message"].startswith(
        f"s3://raw/{CURRENCY_KEY}, line 3: has 2 field(s), the header has 3 (value 'EUR;978')"
    )
    assert alert["rerun_input"]["start_at"] == "ingest"


def test_manual_execution_can_start_at_validate(workflow):
    # The table was loaded earlier (steps called directly: moto cannot run a second
    # execution of one state machine, it fails to deep-copy the first one).
    _land_currency(workflow)
    state = lambda_handler(_object_created(CURRENCY_KEY), None)
    for step in ("load", "validate"):
        state = lambda_handler({**state, "step": step}, None)
    workflow.invocations.clear()
    manual = {
        "start_at": "validate",
        "step": "validate",
        "run_id": "manual-rerun-1",
        "table": "dim_currency",
        "rows_written": 178,
        "config": str(workflow.tmp / "configs" / "dim_currency.json"),
    }
    done = workflow.run(manual)
    assert done["status"] == "SUCCEEDED", done
    assert workflow.invocations == ["validate"]
    assert workflow.states(done) == ["ChooseFirstStep", "Validate", "ValidationPassed", "Loaded"]
    assert _count(
        workflow,
        "SELECT COUNT(*) FROM etl_audit.data_quality_tests WHERE run_id = 'manual-rerun-1'",
    ) == [(5,)]


class _CloudFormationLoader(yaml.SafeLoader):
    """Reads template.yaml; a short-form tag becomes {tag: value} (e.g. {"Ref": "RawBucket"})."""


_CloudFormationLoader.add_multi_constructor(
    "!",
    lambda loader, tag, node: {
        tag: loader.construct_scalar(node)
        if isinstance(node, yaml.ScalarNode)
        else loader.construct_sequence(node, deep=True)
    },
)


def _rule_pattern(raw_bucket: str) -> dict[str, Any]:
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CloudFormationLoader)
    events = template["Resources"]["RefloadStateMachine"]["Properties"]["Events"]
    pattern = events["RawObjectCreated"]["Properties"]["Pattern"]
    assert pattern["detail"]["bucket"]["name"] == [{"Ref": "RawBucket"}]
    pattern["detail"]["bucket"]["name"] = [raw_bucket]
    return pattern


def test_s3_object_created_event_starts_an_execution_with_that_event(workflow):
    # S3 -> EventBridge -> the template's rule. moto delivers rule targets to SQS, not to
    # Step Functions, so the matched event is captured and started as EventBridge would.
    events = boto3.client("events", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="rule-target")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="raw-object-created", EventPattern=json.dumps(_rule_pattern("raw")))
    events.put_targets(Rule="raw-object-created", Targets=[{"Id": "sfn", "Arn": queue_arn}])
    workflow.s3.put_bucket_notification_configuration(
        Bucket="raw", NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    workflow.s3.create_bucket(Bucket="elsewhere")
    workflow.s3.put_bucket_notification_configuration(
        Bucket="elsewhere", NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    workflow.s3.put_object(Bucket="elsewhere", Key=CURRENCY_KEY, Body=b"not ours")
    _land_currency(workflow)

    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    [event] = [json.loads(m["Body"]) for m in messages]
    assert (
        event["detail-type"],
        event["detail"]["bucket"]["name"],
        event["detail"]["object"]["key"],
    ) == ("Object Created", "raw", CURRENCY_KEY)
    done = workflow.run(event)
    assert done["status"] == "SUCCEEDED", done
    assert json.loads(done["input"]) == event
    output = json.loads(done["output"])
    assert (output["table"], output["source"]) == ("dim_currency", f"s3://raw/{CURRENCY_KEY}")
