"""The real statemachine.asl.json, executed by moto, with the Lambda task running our handler.

moto is pinned (pyproject/constraints): these tests replace moto's
`LambdaFunction._invoke_lambda` (which would start a container) with an in-process
call of `handler.lambda_handler`, the retrier's sleep with a recorder, and the
deep copy of the state machine per execution with one that shares moto's backend.
"""

from __future__ import annotations

import copy
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
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from moto import mock_aws
from moto.awslambda.models import LambdaFunction
from moto.stepfunctions.parser import models as sfn_models
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import (
    ResourceCondition,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback import (  # noqa: E501
    StateTaskServiceCallback,
)

from handler import lambda_handler
from handler.cli import main
from steps.shared.io import storage
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
    request_ids: list[str] = field(default_factory=list)
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

    def history(self, described: dict[str, Any]) -> list[dict[str, Any]]:
        return list(
            self.sfn.get_execution_history(executionArn=described["executionArn"])["events"]
        )

    def states(self, described: dict[str, Any]) -> list[str]:
        return [
            e["stateEnteredEventDetails"]["name"]
            for e in self.history(described)
            if "stateEnteredEventDetails" in e
        ]

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in (self.tmp / "outbox").glob("*.alert.json")]


def _in_process(workflow: Workflow):
    def invoke(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
        payload = json.loads(event) if isinstance(event, str) else event
        workflow.invocations.append(payload.get("step", "event"))
        context = types.SimpleNamespace(aws_request_id=str(uuid.uuid4()))  # as the runtime's
        workflow.request_ids.append(context.aws_request_id)
        try:
            return json.dumps(lambda_handler(payload, context), default=str), False, ""
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

        def copy_machine(machine: Any) -> Any:
            # moto deep-copies the state machine for each execution, with its backend and
            # its earlier executions, which hold locks: a second execution would fail.
            shared = (machine.backend, machine.executions)
            return copy.deepcopy(machine, memo={id(o): o for o in shared})

        monkeypatch.setattr(sfn_models, "copy", types.SimpleNamespace(deepcopy=copy_machine))
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
        "PublishedOrStale",
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
    # One run id everywhere: the execution's name, the alert, etl_audit.run_log.
    assert alert["run_id"] == done["name"]
    assert _count(workflow, "SELECT DISTINCT run_id FROM etl_audit.run_log") == [(done["name"],)]


@pytest.mark.slow
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
    # The table was loaded earlier (steps called directly).
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


@pytest.mark.slow
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
    workflow.s3.put_object(Bucket="raw", Key="currency/2026-11-02/", Body=b"")  # a folder
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


def _run_log(workflow: Workflow) -> list[tuple[Any, ...]]:
    return _count(
        workflow,
        "SELECT run_id, table_name, step, status FROM etl_audit.run_log ORDER BY logged_at",
    )


def test_a_marker_object_ends_the_execution_without_load_or_alert(workflow):
    key = "currency/2026-11-01/_SUCCESS"
    workflow.s3.put_object(Bucket="raw", Key=key, Body=b"")
    done = workflow.run(_object_created(key))
    assert done["status"] == "SUCCEEDED", done
    assert workflow.states(done) == ["ChooseFirstStep", "Ingest", "IngestedOrIgnored", "Ignored"]
    assert workflow.invocations == ["ingest"]
    assert workflow.alerts() == []
    assert not (workflow.tmp / "w.duckdb").exists()  # no run_log row either
    assert json.loads(done["output"])["ignored"] is True


STATE_LIMIT = 256 * 1024  # bytes; Step Functions fails the execution above it (uncatchable)


def _wide_table(workflow: Workflow) -> str:
    from tests.test_handler import WIDE_MAPPING, WIDE_TESTS, wide_rows

    configs = workflow.tmp / "configs"
    (configs / "mappings" / "t_wide.csv").write_text(WIDE_MAPPING)
    config = {
        "table_name": "t_wide",
        "source_prefix": "wide/",
        "mapping_file": "mappings/t_wide.csv",
        "quality_tests": WIDE_TESTS,
    }
    (configs / "t_wide.json").write_text(json.dumps(config))
    key = "wide/2026-11-01/wide.csv"
    workflow.s3.put_object(Bucket="raw", Key=key, Body=wide_rows().encode())
    return key


def _assert_states_fit(workflow: Workflow, done: dict[str, Any]) -> None:
    """Every state's input and output, and every Task's parameters, under 256 KiB."""
    sizes = {}
    for event in workflow.history(done):
        for kind, details in event.items():
            if kind.endswith("EventDetails"):
                for name in ("input", "output", "parameters"):
                    if isinstance(details.get(name), str):
                        size = len(details[name].encode())
                        sizes[f"{kind}.{name}#{event['id']}"] = size
    assert sizes and max(sizes.values()) < STATE_LIMIT, max(sizes.items(), key=lambda i: i[1])


@pytest.mark.slow
def test_wide_rows_and_six_failing_tests_keep_every_state_under_256_kib(workflow):
    done = workflow.run(_object_created(_wide_table(workflow)))
    assert done["status"] == "FAILED"
    assert workflow.invocations == ["ingest", "load", "validate", "notify"]
    _assert_states_fit(workflow, done)
    exits = {
        e["stateExitedEventDetails"]["name"]: e["stateExitedEventDetails"]
        for e in workflow.history(done)
        if "stateExitedEventDetails" in e
    }
    notify_in, notify_out = (json.loads(exits[n]["output"]) for n in ("ValidateFailed", "Notify"))
    # Notify adds a small summary beside the state, it does not repeat the state.
    assert set(notify_out) - set(notify_in) == {"notified"}
    assert notify_out["notified"] == {
        "channels": {
            "outbox": {"status": "sent", "ref": notify_out["notified"]["channels"]["outbox"]["ref"]}
        },
        "failed_channels": [],
    }
    [alert] = workflow.alerts()
    assert [c["status"] for c in alert["failed_checks"]] == ["fail"] * 6
    # The samples the state leaves out are in the audit table.
    assert _count(
        workflow, "SELECT COUNT(*) FROM etl_audit.data_quality_tests WHERE status = 'fail'"
    ) == [(6,)]


def _fail_every_channel(monkeypatch: pytest.MonkeyPatch, workflow: Workflow) -> None:
    blocker = workflow.tmp / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("REFLOAD_OUTBOX", str(blocker / "outbox"))
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "outbox,ses")  # ses: no sender configured
    monkeypatch.delenv("REFLOAD_ALERT_EMAIL_FROM", raising=False)


@pytest.mark.slow
def test_every_alert_channel_down_fails_the_execution_visibly(workflow, monkeypatch):
    _fail_every_channel(monkeypatch, workflow)
    done = workflow.run(_object_created(_wide_table(workflow)))
    assert done["status"] == "FAILED"
    assert done["error"] == "RefloadAlertNotDelivered"
    notifies = workflow.invocations.count("notify")
    assert notifies > 1 and len(workflow.sleeps) == notifies - 1  # retried as transient
    assert workflow.states(done)[-1] == "AlertNotDelivered"


@pytest.mark.slow
def test_one_alert_channel_down_is_listed_and_the_others_deliver(workflow, monkeypatch):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "ses,outbox")
    monkeypatch.delenv("REFLOAD_ALERT_EMAIL_FROM", raising=False)
    done = workflow.run(_object_created(_wide_table(workflow)))
    assert done["status"] == "FAILED" and done["error"] == "RefloadRunFailed"
    assert workflow.invocations.count("notify") == 1
    [notify] = [
        json.loads(e["stateExitedEventDetails"]["output"])
        for e in workflow.history(done)
        if e.get("stateExitedEventDetails", {}).get("name") == "Notify"
    ]
    assert notify["notified"]["failed_channels"] == ["ses"]
    assert notify["notified"]["channels"]["outbox"]["status"] == "sent"
    assert len(workflow.alerts()) == 1


def _break(step: str, workflow: Workflow, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make `step` fail terminally; returns what repairs it."""
    config_path = workflow.tmp / "configs" / "dim_currency.json"
    if step == "ingest":
        _land_currency(workflow, b"ISO 4217;;\nAlphabetic code;Numeric code;Currency\nEUR;978\n")
        return lambda: _land_currency(workflow)
    _land_currency(workflow)
    if step == "load":
        good = f"duckdb:///{workflow.tmp / 'w.duckdb'}"
        blocker = workflow.tmp / "not_a_folder"
        blocker.write_text("")
        monkeypatch.setenv("REFLOAD_WAREHOUSE_URL", f"duckdb:///{blocker}/w.duckdb")
        return lambda: monkeypatch.setenv("REFLOAD_WAREHOUSE_URL", good)
    original = config_path.read_text()
    config = json.loads(original)
    config["quality_tests"].append({"type": "row_count_between", "max": 100})
    config_path.write_text(json.dumps(config))
    return lambda: config_path.write_text(original)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["ingest", "load", "validate"])
def test_the_alerts_rerun_input_starts_a_working_execution_as_printed(step, workflow, monkeypatch):
    repair = _break(step, workflow, monkeypatch)
    failed = workflow.run(_object_created(CURRENCY_KEY))
    assert failed["status"] == "FAILED"
    [alert] = workflow.alerts()
    assert (alert["failed_step"], alert["table"], alert["run_id"]) == (
        step,
        "dim_currency",
        failed["name"],
    )
    rerun = alert["rerun_input"]
    assert (rerun["start_at"], rerun["source"]) == (step, f"s3://raw/{CURRENCY_KEY}")
    assert not {"detail", "detail-type", "execution_id", "failure"} & set(rerun)

    repair()
    workflow.invocations.clear()
    done = workflow.run(json.loads(json.dumps(rerun)))  # verbatim, as an operator pastes it
    assert done["status"] == "SUCCEEDED", done
    assert (
        workflow.invocations
        == ["ingest", "load", "validate"][["ingest", "load", "validate"].index(step) :]
    )
    assert _count(workflow, "SELECT COUNT(*) FROM public.dim_currency") == [(178,)]
    logged = _run_log(workflow)
    assert {r[0] for r in logged} == {failed["name"]}  # the failed run and its re-run
    assert {r[1] for r in logged} == {"dim_currency"}
    assert logged[-1][2:] == ("validate", "passed")


def test_an_invalid_run_id_in_a_manual_execution_is_alerted_under_the_execution(workflow):
    _land_currency(workflow)
    manual = {
        "start_at": "ingest",
        "run_id": "2026/11/01",
        "config": str(workflow.tmp / "configs" / "dim_currency.json"),
        "source": f"s3://raw/{CURRENCY_KEY}",
    }
    done = workflow.run(manual)
    assert (done["status"], done["error"]) == ("FAILED", "RefloadRunFailed")
    assert workflow.invocations == ["ingest", "notify"]
    [alert] = workflow.alerts()
    assert alert["run_id"] == done["name"]
    assert alert["error"]["message"] == (
        "'ingest' payload: run_id: must be 1-64 letters, digits, '.', '_', ':' or '-', starting "
        "with a letter or digit (got '2026/11/01')"
    )


def test_a_huge_rejected_value_is_shortened_so_notify_still_runs(workflow):
    configs = workflow.tmp / "configs"
    (configs / "mappings" / "t_codes.csv").write_text(
        "source_column,target_column,data_type\ncode,code,varchar(3)\n"
    )
    (configs / "t_codes.json").write_text(
        json.dumps(
            {
                "table_name": "t_codes",
                "source_prefix": "codes/",
                "mapping_file": "mappings/t_codes.csv",
            }
        )
    )
    key = "codes/2026-11-01/codes.csv"
    # 100,000 characters, 200 KB in UTF-8 and 600 KB as JSON escapes (\\u00e4).
    workflow.s3.put_object(Bucket="raw", Key=key, Body=("code\n" + "ä" * 100_000 + "\n").encode())
    done = workflow.run(_object_created(key))
    assert (done["status"], done["error"]) == ("FAILED", "RefloadRunFailed")
    assert workflow.invocations == ["ingest", "notify"]
    [alert] = workflow.alerts()
    assert alert["error"]["type"] == "RejectedInput"
    assert "ää… (100000 characters)" in alert["error"]["message"]
    assert len(alert["error"]["message"]) < 1000
    _assert_states_fit(workflow, done)


class _EmrServerlessJob(StateTaskServiceCallback):
    """`emr-serverless:startJobRun.sync` at the integration boundary (moto does not run EMR
    Serverless): the job's entry point runs in process on the tests' local Spark session,
    as EMR Serverless runs scripts/spark_job.py, and the task ends when it ends."""

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        super().__init__(supported_integration_patterns={ResourceCondition.Sync})
        self.runs = runs

    def _get_supported_parameters(self) -> set[str]:  # EMR Serverless StartJobRun's
        return {"ApplicationId", "ExecutionRoleArn", "Name", "JobDriver", "ClientToken"}

    def _eval_service_task(self, env, **task: Any) -> None:  # moto passes keywords
        from steps.ingest.emr import job_main

        parameters = task["normalised_parameters"]
        self.runs.append(parameters)
        arguments = parameters["JobDriver"]["SparkSubmit"]["EntryPointArguments"]
        state = "SUCCESS" if job_main(arguments) == 0 else "FAILED"
        env.stack.append({"JobRunId": f"job-{len(self.runs)}", "State": state})

    def _eval_integration_pattern(self, env, **task: Any) -> None:
        return None  # the job has finished: its description stays on the stack


@pytest.fixture
def emr_job_runs(monkeypatch) -> list[dict[str, Any]]:
    """The EMR Serverless task stood in; set before the state machine is created (parsed)."""
    runs: list[dict[str, Any]] = []
    original = state_task_factory.state_task_service_for

    def service_for(service_name: str):
        if service_name == "emr-serverless":
            return _EmrServerlessJob(runs)
        return original(service_name=service_name)

    monkeypatch.setattr(state_task_factory, "state_task_service_for", service_for)
    return runs


@pytest.fixture
def spark_workflow(emr_job_runs, workflow, spark, monkeypatch):
    """The workflow with an EMR Serverless application configured: dim_currency on Spark."""
    monkeypatch.setenv("REFLOAD_SPARK_APPLICATION_ID", "00fabcd1234")
    config_path = workflow.tmp / "configs" / "dim_currency.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "engine": "spark"}))
    workflow.spark_runs = emr_job_runs  # type: ignore[attr-defined]
    return workflow


def _spark_event(workflow: Workflow, source: Path) -> dict[str, Any]:
    # Local paths: the local Spark workers are processes of their own, outside moto's S3.
    return {
        "step": "ingest",
        "config": str(workflow.tmp / "configs" / "dim_currency.json"),
        "source": str(source),
        "curated_root": str(workflow.tmp / "curated"),
    }


def test_a_spark_table_is_ingested_on_emr_serverless_and_load_publishes_its_parts(
    spark_workflow,
):
    source = next((SAMPLES / "currency").glob("*/*"))
    done = spark_workflow.run(_spark_event(spark_workflow, source), timeout=180)
    assert done["status"] == "SUCCEEDED", done
    assert spark_workflow.states(done) == [
        "ChooseFirstStep",
        "Ingest",
        "IngestedOrIgnored",
        "SparkIngest",
        "SparkIngestResult",
        "Load",
        "PublishedOrStale",
        "Validate",
        "ValidationPassed",
        "Loaded",
    ]
    assert spark_workflow.invocations == ["ingest", "ingest", "load", "validate"]
    [job] = spark_workflow.spark_runs
    assert job["ApplicationId"] == "${SparkApplicationId}"  # the template substitutes it
    [argument] = job["JobDriver"]["SparkSubmit"]["EntryPointArguments"]
    assert json.loads(argument)["source"] == str(source)
    output = json.loads(done["output"])
    assert output["curated_uri"].endswith("parts.manifest")
    written = pa.concat_tables(
        pq.read_table(part) for part in storage.curated_parts(output["curated_uri"])
    )
    published = _count(spark_workflow, "SELECT * FROM public.dim_currency ORDER BY ALL")
    assert published == sorted(tuple(row.values()) for row in written.to_pylist())
    assert len(published) == 178


def test_a_file_the_spark_job_rejects_alerts_as_the_lambda_engine_would(spark_workflow):
    source = spark_workflow.tmp / "iso4217.csv"
    source.write_bytes(b"ISO 4217;;\nAlphabetic code;Numeric code;Currency\nEUR;978\n")
    done = spark_workflow.run(_spark_event(spark_workflow, source), timeout=180)
    assert done["status"] == "FAILED"
    assert spark_workflow.states(done)[-5:] == [
        "SparkIngest",
        "SparkIngestResult",
        "IngestFailed",
        "Notify",
        "Failed",
    ]
    [alert] = spark_workflow.alerts()
    assert alert["error"]["type"] == "RejectedInput"
    assert alert["error"]["message"].startswith(
        f"{source}, line 3: has 2 field(s), the header has 3 (value 'EUR;978')"
    )
    # Re-run from ingest (after the file is fixed) runs the job again, not its old result.
    assert alert["rerun_input"]["start_at"] == "ingest"
    assert "spark_result_uri" not in alert["rerun_input"]


@pytest.fixture
def aws_state_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Step Functions' payload quota as AWS enforces it: every state's input (and, as moto
    already checks, its output) at most 256 KiB, and `States.DataLimitExceeded` terminal:
    no Catch traps it, `States.ALL` included, so the execution fails without Notify.
    moto lets `States.ALL` catch it, which would hide the failure these tests look for."""
    from moto.stepfunctions.parser.asl.component.common.error_name.error_equals_decl import (
        ErrorEqualsDecl,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.state import CommonStateField

    limit = StatesErrorNameType.StatesStatesDataLimitExceeded
    matches = ErrorEqualsDecl._eval_body

    def error_equals(self: Any, env: Any) -> None:
        error_name = env.stack[-1]
        if isinstance(error_name, StatesErrorName) and error_name.typ == limit:
            env.stack.pop()
            env.stack.append(False)  # terminal: matches no Retry or Catch
            return
        matches(self, env)

    state_input = CommonStateField._eval_state_input

    def checked_input(self: Any, env: Any) -> None:
        CommonStateField._verify_size_quota(self, env, env.states.get_input())
        state_input(self, env)

    monkeypatch.setattr(ErrorEqualsDecl, "_eval_body", error_equals)
    monkeypatch.setattr(CommonStateField, "_eval_state_input", checked_input)


@pytest.mark.slow
def test_the_state_limit_wrapper_fails_an_execution_as_aws_does(aws_state_limits, workflow):
    # The wrapper itself: an input over 256 KiB fails the execution, and no Catch runs.
    _land_currency(workflow)
    event = {**_object_created(CURRENCY_KEY), "padding": "x" * STATE_LIMIT}
    done = workflow.run(event)
    assert (done["status"], done["error"]) == ("FAILED", "States.DataLimitExceeded")
    assert workflow.invocations == []
    assert workflow.alerts() == []


@pytest.mark.slow
def test_a_thousand_failing_checks_with_long_names_still_notify(aws_state_limits, workflow):
    config_path = workflow.tmp / "configs" / "dim_currency.json"
    config = json.loads(config_path.read_text())
    config["quality_tests"] += [
        {"type": "row_count_between", "max": 1, "name": f"rows_{i:04d}_{'n' * 240}"}
        for i in range(1000)
    ]
    config_path.write_text(json.dumps(config))
    _land_currency(workflow)
    done = workflow.run(_object_created(CURRENCY_KEY))
    assert (done["status"], done["error"]) == ("FAILED", "RefloadRunFailed"), done
    assert workflow.invocations == ["ingest", "load", "validate", "notify"]
    _assert_states_fit(workflow, done)
    validated = next(
        json.loads(e["stateExitedEventDetails"]["output"])
        for e in workflow.history(done)
        if e.get("stateExitedEventDetails", {}).get("name") == "Validate"
    )
    # The contract: at most 20 checks in the payload, failing first, with the counts.
    assert len(json.dumps(validated).encode()) <= 32 * 1024
    assert (validated["checks_total"], validated["checks_failed"]) == (1005, 1000)
    assert len(validated["checks"]) == 20
    assert {c["status"] for c in validated["checks"]} == {"fail"}
    [alert] = workflow.alerts()
    assert alert["failed_step"] == "validate"
    assert (alert["checks_total"], alert["checks_failed"]) == (1005, 1000)
    assert len(alert["failed_checks"]) == 20
    assert "980 more failing test(s)" in alert["text"]
    # Every result is on record.
    assert _count(
        workflow, "SELECT COUNT(*) FROM etl_audit.data_quality_tests WHERE status = 'fail'"
    ) == [(1000,)]


def test_a_one_megabyte_hook_message_still_notifies(aws_state_limits, workflow, monkeypatch):
    code = workflow.tmp / "code"
    code.mkdir()
    (code / "bighooks.py").write_text(
        "def shout(rows):\n    raise ValueError('too loud: ' + 'A' * 1_000_000)\n"
    )
    monkeypatch.syspath_prepend(str(code))
    config_path = workflow.tmp / "configs" / "dim_currency.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "python_transform": "bighooks:shout"}))
    _land_currency(workflow)
    try:
        done = workflow.run(_object_created(CURRENCY_KEY))
    finally:
        import sys

        from steps.ingest import hooks

        sys.modules.pop("bighooks", None)
        hooks._loaded.clear()
    assert (done["status"], done["error"]) == ("FAILED", "RefloadRunFailed"), done
    assert workflow.invocations == ["ingest", "notify"]
    _assert_states_fit(workflow, done)
    [path] = (workflow.tmp / "outbox").glob("*.alert.json")
    assert path.stat().st_size < 300_000
    alert = json.loads(path.read_text())
    assert alert["error"]["type"] == "RejectedInput"
    message = alert["error"]["message"]
    assert message.startswith(
        f"s3://raw/{CURRENCY_KEY}: python_transform bighooks:shout: raised ValueError: too loud: A"
    )
    assert message.endswith("…(truncated, 1000104 bytes)")
    assert len(message.encode()) <= 2048
    # The subject and the body: the subject short, the body with the full text (64 KiB).
    assert len(alert["subject"].encode()) <= 2048
    assert "A" * 60_000 in alert["text"] and "A" * 70_000 not in alert["text"]
    [(logged, details)] = _count(
        workflow,
        "SELECT error_message, details FROM etl_audit.run_log WHERE step = 'ingest'",
    )
    assert "A" * 60_000 in logged and len(logged.encode()) <= 65535
    assert "A" * 60_000 in json.loads(details)["error"]


def test_every_log_record_names_the_request_the_execution_the_table_and_the_run(workflow, capsys):
    _land_currency(workflow, b"ISO 4217;;\nAlphabetic code;Numeric code;Currency\nEUR;978\n")
    capsys.readouterr()
    done = workflow.run(_object_created(CURRENCY_KEY))
    assert workflow.invocations == ["ingest", "notify"]
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert {r["event"] for r in records} >= {"step started", "step failed", "refload run failed"}
    for record in records:
        assert (record["execution"], record["run_id"], record["table"]) == (
            done["name"],
            done["name"],
            "dim_currency",
        ), record
    # One Lambda request per Task, each record under its own.
    by_step = {(r["step"], r["request_id"]) for r in records}
    assert by_step == set(zip(workflow.invocations, workflow.request_ids, strict=True))


@pytest.mark.slow
def test_a_file_older_than_the_published_one_ends_stale_without_validate_or_alert(workflow):
    """S3 delivers out of order: the newer upload is loaded first; the older one then runs
    ingest and load, publishes nothing and ends in the Stale state: no validate, no alert."""
    older_key, newer_key = "currency/2026-11-01/iso4217.csv", "currency/2026-11-02/iso4217.csv"
    source = next((SAMPLES / "currency").glob("*/*")).read_bytes()
    workflow.s3.put_object(Bucket="raw", Key=older_key, Body=source)
    time.sleep(1.1)  # S3's LastModified counts whole seconds
    workflow.s3.put_object(Bucket="raw", Key=newer_key, Body=source + b"\n")  # other bytes
    assert workflow.run(_object_created(newer_key))["status"] == "SUCCEEDED"
    workflow.invocations.clear()

    done = workflow.run(_object_created(older_key))

    assert done["status"] == "SUCCEEDED", done
    assert workflow.states(done) == [
        "ChooseFirstStep",
        "Ingest",
        "IngestedOrIgnored",
        "Load",
        "PublishedOrStale",
        "Stale",
    ]
    assert workflow.invocations == ["ingest", "load"]
    output = json.loads(done["output"])
    assert (output["stale"], output["published"]) == (True, False)
    assert _count(workflow, "SELECT source_uri FROM etl_audit.load_ledger") == [
        (f"s3://raw/{newer_key}",)
    ]
    assert workflow.alerts() == []


@pytest.mark.slow
def test_each_execution_sends_one_openlineage_start_and_one_end(workflow, monkeypatch, tmp_path):
    # Through the real state machine: load fails once and is retried, then a rejected file.
    events_file = tmp_path / "lineage.jsonl"
    config = tmp_path / "openlineage.yml"
    config.write_text(f"transport:\n  type: file\n  log_file_path: {events_file}\n  append: true\n")
    monkeypatch.setenv("OPENLINEAGE_CONFIG", str(config))
    good = f"duckdb:///{tmp_path / 'w.duckdb'}"
    monkeypatch.setenv("REFLOAD_WAREHOUSE_URL", "postgresql://refload:x@127.0.0.1:9/down")
    workflow.on_sleep.append(lambda: monkeypatch.setenv("REFLOAD_WAREHOUSE_URL", good))
    _land_currency(workflow)
    passed = workflow.run(_object_created(CURRENCY_KEY))
    _land_currency(workflow, b"ISO 4217;;\nAlphabetic code;Numeric code;Currency\nEUR;978\n")
    rejected = workflow.run(_object_created(CURRENCY_KEY))
    assert (passed["status"], rejected["status"]) == ("SUCCEEDED", "FAILED")
    assert workflow.invocations == ["ingest", "load", "load", "validate", "ingest", "notify"]
    sent = [json.loads(line) for line in events_file.read_text().splitlines()]
    first, second = (
        str(uuid.uuid5(uuid.UUID("6f1c2b0e-5a43-4c1e-9d3e-7a0c5e2b9f41"), done["name"]))
        for done in (passed, rejected)
    )
    assert [(e["run"]["runId"], e["eventType"]) for e in sent] == [
        (first, "START"),
        (first, "COMPLETE"),
        (second, "START"),
        (second, "FAIL"),
    ]
    assert {(d["namespace"], d["name"]) for e in sent for d in e["inputs"]} == {
        ("s3://raw", CURRENCY_KEY)
    }


# --- table groups: a member's file arriving alone (steps.group.arrival) ---------------------

GROUP_KEYS = {
    "dim_country": "country/2026-11-01/iso3166_countries.xlsx",
    "dim_subdivision": "subdivision/2026-11-01/iso3166_2.psv.gz",
}


def _iso_group(workflow: Workflow) -> None:
    groups = workflow.tmp / "configs" / "groups"
    groups.mkdir()
    relationship = {
        "type": "relationships",
        "column": "dim_subdivision.country_code",
        "to": "dim_country.alpha_2",
    }
    (groups / "iso.json").write_text(
        json.dumps({"group": "iso", "tables": list(GROUP_KEYS), "checks": [relationship]})
    )


def _arrive(workflow: Workflow, table: str) -> dict[str, Any]:
    key = GROUP_KEYS[table]
    source = SAMPLES / key
    workflow.s3.put_object(Bucket="raw", Key=key, Body=source.read_bytes())
    done = workflow.run(_object_created(key))
    assert done["status"] == "SUCCEEDED", done
    return done


def _published(workflow: Workflow) -> list[tuple[Any, ...]]:
    return _count(
        workflow,
        "SELECT table_name, run_id, group_run_id FROM etl_audit.load_ledger ORDER BY table_name",
    )


@pytest.mark.slow
@pytest.mark.parametrize("first", list(GROUP_KEYS))
def test_group_members_arriving_in_either_order_publish_together(workflow, first, capsys):
    _iso_group(workflow)
    second = next(t for t in GROUP_KEYS if t != first)
    held = _arrive(workflow, first)
    assert workflow.states(held)[-2:] == ["PublishedOrStale", "HeldForGroup"]
    assert json.loads(held["output"])["waiting_for"] == [second]
    assert _published(workflow) == []
    # `status` and `freshness` name the group and the member it waits for.
    capsys.readouterr()
    main(["freshness", "--json"])
    (waiting,) = json.loads(capsys.readouterr().out)["groups_waiting"]
    assert (waiting["group"], waiting["waiting_for"], waiting["pending"]) == (
        "iso",
        [second],
        [first],
    )
    assert main(["status", "--json"]) == 0
    (group,) = json.loads(capsys.readouterr().out)["groups"]
    assert (group["pending"], group["waiting_for"]) == ([first], [second])
    done = _arrive(workflow, second)
    assert workflow.states(done)[-3:] == ["Validate", "ValidationPassed", "Loaded"]
    # Each member's ledger row names the run that ingested its file, and the group run
    # (the execution that completed the set) that published them both.
    run_id = json.loads(done["output"])["run_id"]
    runs = {first: json.loads(held["output"])["run_id"], second: run_id}
    assert _published(workflow) == [(t, runs[t], run_id) for t in sorted(GROUP_KEYS)]
    assert _count(workflow, "SELECT COUNT(*) FROM public.dim_subdivision") == [(5046,)]
    assert _count(workflow, "SELECT COUNT(*) FROM public.dim_country") == [(249,)]
    # Both members' tests ran, each under the run that ingested its file; the group's
    # check under the group's name.
    assert _count(
        workflow,
        "SELECT table_name, run_id, COUNT(*), MIN(status) FROM etl_audit.data_quality_tests "
        "GROUP BY table_name, run_id ORDER BY table_name",
    ) == [
        ("dim_country", runs["dim_country"], 6, "pass"),
        ("dim_subdivision", runs["dim_subdivision"], 5, "pass"),
        ("iso", run_id, 1, "pass"),
    ]
    output = json.loads(done["output"])
    assert (output["checks_total"], output["checks_failed"]) == (11, 0)


@pytest.mark.slow
def test_a_group_member_arriving_twice_is_held_once_and_replays_are_idempotent(workflow):
    _iso_group(workflow)
    for _ in range(2):  # the same file twice: still one member, waiting for the other
        held = _arrive(workflow, "dim_country")
        assert json.loads(held["output"])["waiting_for"] == ["dim_subdivision"]
    assert _published(workflow) == []
    run_id = json.loads(_arrive(workflow, "dim_subdivision")["output"])["run_id"]
    country_run = json.loads(held["output"])["run_id"]  # the newest of the two
    assert _published(workflow) == [
        ("dim_country", country_run, run_id),
        ("dim_subdivision", run_id, run_id),
    ]
    # Once published, the same file again is a replay: skipped, not held for the group.
    replay = _arrive(workflow, "dim_country")
    output = json.loads(replay["output"])
    assert output["held"] is False and output["published"] is False
    assert output["skipped_reason"].startswith(f"already published by run {country_run}")
    assert len(_published(workflow)) == 2


@pytest.mark.slow
def test_a_member_whose_group_file_is_broken_is_refused_not_published_alone(workflow):
    _iso_group(workflow)
    iso = workflow.tmp / "configs" / "groups" / "iso.json"
    iso.write_text(iso.read_text()[:60])  # a save cut short: still names dim_country
    assert '"dim_country"' in iso.read_text()
    key = GROUP_KEYS["dim_country"]
    workflow.s3.put_object(Bucket="raw", Key=key, Body=(SAMPLES / key).read_bytes())
    done = workflow.run(_object_created(key))
    assert done["status"] == "FAILED"
    assert workflow.states(done)[-2:] == ["Notify", "Failed"]
    [alert] = workflow.alerts()
    assert alert["failed_step"] == "load"
    assert f"{iso}" in alert["error"]["message"] and "not valid JSON" in alert["error"]["message"]
    assert _published(workflow) == []  # not published outside its group
