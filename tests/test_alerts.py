"""Alerts through SES (moto), ServiceNow (a local HTTP server) and SMTP (aiosmtpd)."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import shutil
import socket
from pathlib import Path

import pytest
from werkzeug import Request, Response

from handler.cli import main
from tests.conftest import CONFIGS, SAMPLES, run_args

SENDER, ON_CALL = "refload@example.com", "data-oncall@example.com"
SN_PASSWORD = "sn-pa55word"


@pytest.fixture
def failing_country(tmp_path: Path) -> Path:
    """dim_country with a test that fails on real rows (names that do not start A-Z)."""
    folder = tmp_path / "configs"
    shutil.copytree(CONFIGS, folder)
    config = json.loads((folder / "dim_country.json").read_text())
    config["quality_tests"].append(
        {"type": "regex", "name": "name_starts_ascii", "column": "name", "pattern": "^[A-Z]"}
    )
    (folder / "dim_country.json").write_text(json.dumps(config))
    return folder / "dim_country.json"


@pytest.fixture
def alert_env(monkeypatch, httpserver):
    monkeypatch.setenv("REFLOAD_ALERT_EMAIL_FROM", SENDER)
    monkeypatch.setenv("REFLOAD_ALERT_EMAIL_TO", ON_CALL)
    monkeypatch.setenv("REFLOAD_SERVICENOW_URL", httpserver.url_for("/"))
    monkeypatch.setenv("REFLOAD_SERVICENOW_USER", "refload")
    monkeypatch.setenv("REFLOAD_SERVICENOW_PASSWORD", SN_PASSWORD)
    monkeypatch.setenv("REFLOAD_HTTP_RETRIES", "3")


@pytest.fixture
def ses(s3):
    """moto SES (same mock as S3) with the sender verified; yields the sent raw messages."""
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    boto3.client("ses", region_name="us-east-1").verify_email_identity(EmailAddress=SENDER)
    return ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages


class FakeServiceNow:
    """Incidents kept in memory, served like the Table API."""

    def __init__(self, httpserver) -> None:
        self.incidents: list[dict[str, object]] = []
        self.requests: list[tuple[str, str, dict[str, object]]] = []
        self.fail_next: list[int] = []
        # Statuses for the next creates: (before creating, after creating) it.
        self.post_fails: list[tuple[str, int]] = []
        httpserver.expect_request("/api/now/table/incident", method="GET").respond_with_handler(
            self.query
        )
        httpserver.expect_request("/api/now/table/incident", method="POST").respond_with_handler(
            self.create
        )
        httpserver.expect_request(
            "/api/now/table/incident/sys-1", method="PATCH"
        ).respond_with_handler(self.update)

    def _record(self, request: Request) -> Response | None:
        self.requests.append(
            (request.method, request.full_path, request.get_json(silent=True) or {})
        )
        auth = request.headers.get("Authorization", "")
        if auth != "Basic " + base64.b64encode(f"refload:{SN_PASSWORD}".encode()).decode():
            return Response(json.dumps({"error": {"message": "User Not Authenticated"}}), 401)
        if self.fail_next:
            return Response("{}", self.fail_next.pop(0))
        return None

    def query(self, request: Request) -> Response:
        refused = self._record(request)
        if refused:
            return refused
        wanted = request.args["sysparm_query"]
        found = [
            {"sys_id": i["sys_id"], "number": i["number"]}
            for i in self.incidents
            if wanted == f"correlation_id={i['correlation_id']}^active=true"
        ]
        return Response(json.dumps({"result": found[:1]}), 200)

    def create(self, request: Request) -> Response:
        refused = self._record(request)
        if refused:
            return refused
        when, status = self.post_fails.pop(0) if self.post_fails else ("", 0)
        if when == "before":
            return Response("{}", status)
        incident = {
            **request.get_json(),
            "sys_id": f"sys-{len(self.incidents) + 1}",
            "number": f"INC00{len(self.incidents) + 1}",
            "work_notes": [],
        }
        self.incidents.append(incident)
        if when == "after":  # created, but the answer says otherwise (a proxy timed out)
            return Response("<html>Bad Gateway</html>", status)
        return Response(json.dumps({"result": incident}), 201)

    def update(self, request: Request) -> Response:
        refused = self._record(request)
        if refused:
            return refused
        self.incidents[0]["work_notes"].append(request.get_json()["work_notes"])  # type: ignore[union-attr]
        return Response(json.dumps({"result": self.incidents[0]}), 200)


@pytest.fixture
def servicenow(httpserver) -> FakeServiceNow:
    return FakeServiceNow(httpserver)


def _run(config: Path, warehouse_url: str, capsys) -> tuple[int, dict[str, object]]:
    source = next((SAMPLES / "country").glob("*/*"))
    code = main(run_args(config, source, warehouse_url, "--json"))
    captured = capsys.readouterr()
    LOGS.append(captured.err)
    return code, json.loads(captured.out)


LOGS: list[str] = []


def test_failing_sample_table_sends_one_email_and_one_incident(
    failing_country, alert_env, ses, servicenow, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "outbox,ses,servicenow")
    code, summary = _run(failing_country, f"duckdb:///{tmp_path / 'w.duckdb'}", capsys)

    assert code == 1
    assert {k: v["status"] for k, v in summary["alert"].items()} == {
        "outbox": "sent",
        "ses": "sent",
        "servicenow": "sent",
    }
    [sent] = ses
    message = email.message_from_bytes(sent.raw_data.encode(), policy=email.policy.default)
    assert message["Subject"].startswith("[refload] dim_country failed on ")
    assert (message["From"], message["To"]) == (SENDER, ON_CALL)
    text = message.get_body(("plain",)).get_content()
    page = message.get_body(("html",)).get_content()
    [incident] = servicenow.incidents
    for body in (text, incident["description"]):
        assert "Table:         dim_country" in body
        assert "Failed test: name_starts_ascii (regex, severity error): fail" in body
        assert "observed: 1   expected: matches ^[A-Z]" in body
        assert '"name": "Åland Islands"' in body
        assert "python -m handler replay rerun.json" in body
        assert '"start_at": "validate"' in body
    assert "name_starts_ascii" in page and "Åland Islands" in page
    assert incident["short_description"] == message["Subject"]
    assert incident["correlation_id"].startswith("refload:dim_country:")
    assert (incident["urgency"], incident["impact"]) == ("2", "2")


def test_a_repeated_failure_updates_the_open_incident(
    failing_country, alert_env, servicenow, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "servicenow")
    warehouse = f"duckdb:///{tmp_path / 'w.duckdb'}"
    _, first = _run(failing_country, warehouse, capsys)
    _, second = _run(failing_country, warehouse, capsys)
    assert first["alert"]["servicenow"]["ref"] == "created INC001"
    assert second["alert"]["servicenow"]["ref"] == "updated INC001"
    [incident] = servicenow.incidents
    [note] = incident["work_notes"]
    assert note.startswith(f"Failed again: run {second['run_id']}")
    assert [m for m, _, _ in servicenow.requests] == ["GET", "POST", "GET", "PATCH"]


@pytest.mark.slow
def test_servicenow_5xx_is_retried(
    failing_country, alert_env, servicenow, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "servicenow")
    servicenow.fail_next = [503, 500]
    _, summary = _run(failing_country, f"duckdb:///{tmp_path / 'w.duckdb'}", capsys)
    assert summary["alert"]["servicenow"] == {"status": "sent", "ref": "created INC001"}
    assert [m for m, _, _ in servicenow.requests] == ["GET", "GET", "GET", "POST"]


@pytest.mark.parametrize(
    ("post_fails", "methods"),
    [
        # Created, then a 502: the lookup finds it; no second incident.
        ([("after", 502)], ["GET", "POST", "GET"]),
        # Not created: looked up, not found, created on the second try.
        ([("before", 503)], ["GET", "POST", "GET", "POST"]),
    ],
    ids=["created-then-502", "503-before-creating"],
)
def test_servicenow_create_is_never_repeated_blindly(
    post_fails, methods, failing_country, alert_env, servicenow, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "servicenow")
    servicenow.post_fails = list(post_fails)
    code, summary = _run(failing_country, f"duckdb:///{tmp_path / 'w.duckdb'}", capsys)
    assert code == 1
    assert summary["alert"]["servicenow"] == {"status": "sent", "ref": "created INC001"}
    assert len(servicenow.incidents) == 1
    assert [m for m, _, _ in servicenow.requests] == methods
    lookups = [path for m, path, _ in servicenow.requests if m == "GET"]
    assert all("sysparm_query=correlation_id" in path for path in lookups)


def test_servicenow_401_is_a_clear_error_and_the_run_keeps_its_own_outcome(
    failing_country, alert_env, servicenow, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "outbox,servicenow")
    monkeypatch.setenv("REFLOAD_SERVICENOW_PASSWORD", "wrong")
    code, summary = _run(failing_country, f"duckdb:///{tmp_path / 'w.duckdb'}", capsys)
    assert code == 1
    assert summary["status"] == "failed"
    assert summary["alert"]["outbox"]["status"] == "sent"
    assert summary["alert"]["servicenow"] == {
        "status": "failed",
        "error": "InfrastructureError: ServiceNow refused the credentials "
        "(HTTP 401); check the user, password or token",
    }
    assert not servicenow.incidents


def test_a_channel_that_is_down_never_hides_the_failure(
    failing_country, alert_env, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "servicenow,outbox")
    monkeypatch.setenv("REFLOAD_SERVICENOW_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("REFLOAD_HTTP_RETRIES", "1")
    code, summary = _run(failing_country, f"duckdb:///{tmp_path / 'w.duckdb'}", capsys)
    assert code == 1
    assert summary["alert"]["servicenow"]["status"] == "failed"
    assert summary["alert"]["outbox"]["status"] == "sent"


def test_bearer_token_from_secrets_manager(
    failing_country, alert_env, httpserver, s3, monkeypatch, capsys, tmp_path
):
    import boto3

    arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="refload/servicenow", SecretString=json.dumps({"token": "tok-123"})
    )["ARN"]
    monkeypatch.setenv("REFLOAD_SERVICENOW_SECRET_ARN", arn)
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "servicenow")
    seen = []

    def answer(request: Request) -> Response:
        seen.append(request.headers["Authorization"])
        body = {"result": []} if request.method == "GET" else {"result": {"number": "INC9"}}
        return Response(json.dumps(body), 200 if request.method == "GET" else 201)

    httpserver.expect_request("/api/now/table/incident").respond_with_handler(answer)
    _, summary = _run(failing_country, f"duckdb:///{tmp_path / 'w.duckdb'}", capsys)
    assert summary["alert"]["servicenow"]["ref"] == "created INC9"
    assert seen == ["Bearer tok-123", "Bearer tok-123"]


def test_smtp_channel_sends_multipart_mail(
    failing_country, alert_env, monkeypatch, capsys, tmp_path
):
    from aiosmtpd.controller import Controller

    received = []

    class Keep:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope)
            return "250 OK"

    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        monkeypatch.setenv("REFLOAD_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("REFLOAD_SMTP_PORT", str(port))
        monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "smtp")
        code, summary = _run(failing_country, f"duckdb:///{tmp_path / 'w.duckdb'}", capsys)
    finally:
        controller.stop()
    assert code == 1 and summary["alert"]["smtp"]["status"] == "sent"
    [envelope] = received
    assert (envelope.mail_from, envelope.rcpt_tos) == (SENDER, [ON_CALL])
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert "name_starts_ascii" in message.get_body(("plain",)).get_content()


def test_per_table_recipients_override_the_default(
    failing_country, alert_env, ses, monkeypatch, capsys, tmp_path
):
    config = json.loads(failing_country.read_text())
    config["alert_emails"] = ["geo-team@example.com", "lead@example.com"]
    failing_country.write_text(json.dumps(config))
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "ses")
    _run(failing_country, f"duckdb:///{tmp_path / 'w.duckdb'}", capsys)
    [sent] = ses
    message = email.message_from_bytes(sent.raw_data.encode(), policy=email.policy.default)
    assert message["To"] == "geo-team@example.com, lead@example.com"


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_no_secret_reaches_a_log_line_or_an_alert(
    failing_country, alert_env, ses, servicenow, warehouse_url, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "outbox,ses,servicenow")
    LOGS.clear()
    code, summary = _run(failing_country, warehouse_url, capsys)
    assert code == 1
    logs = LOGS[-1]
    password = warehouse_url.split("//", 1)[1].split("@")[0].split(":")[1]
    sent = [m.raw_data for m in ses] + [json.dumps(i) for i in servicenow.incidents]
    sent += [p.read_text() for p in (tmp_path / "outbox").glob("*.json")]
    assert sent and logs
    for text in [logs, json.dumps(summary), *sent]:
        assert SN_PASSWORD not in text
        assert f":{password}@" not in text


def test_the_rerun_file_replays_the_failed_step(
    table_dir, write, run_cli, tmp_path, capsys, warehouse_url
):
    config = table_dir("source_column,target_column,data_type\ncode,code,varchar(3)\n")
    source = write("t.csv", "code\nTOOLONG\n")
    code, summary = run_cli(config, source)
    assert code == 2
    [rerun] = (tmp_path / "outbox").glob("*.rerun.json")
    alert = json.loads(next((tmp_path / "outbox").glob("*.alert.json")).read_text())
    assert alert["rerun_command"] == f"python -m handler replay {rerun}"
    assert "warehouse" not in json.loads(rerun.read_text()) or "duckdb" in warehouse_url
    source.write_text("code\nOK\n")  # the vendor sends a corrected file
    assert main(["replay", str(rerun), "--warehouse", warehouse_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == summary["run_id"]


@pytest.mark.parametrize(
    ("password", "unexpected"),
    [
        ("s3cr%zzet-pw", False),  # an invalid % escape: the driver quotes the password alone
        ("it's-a-s3cret", False),  # a quote once ended the URL pattern
        # A failure before the warehouse is opened: only the URL pattern knows the password.
        ("l0cals-s3cret", True),
        ("p%zz", False),  # 4 characters: once never masked outside a URL
    ],
    ids=["percent", "quote", "before-the-warehouse-opens", "four-characters"],
)
def test_no_output_channel_shows_a_warehouse_password(
    password, unexpected, postgres_database, table_dir, write, tmp_path, capsys
):
    from urllib.parse import quote

    import psycopg

    url = f"postgresql://refload:{password}@127.0.0.1:5432/{postgres_database.rsplit('/', 1)[1]}"
    config = table_dir("source_column,target_column,data_type\ncode,code,varchar(3)\n")
    curated = tmp_path / "curated"
    if unexpected:  # writing the curated file fails
        curated.write_text("a file where a folder should be")
    capsys.readouterr()
    source = write("t.csv", "code\nAA\n")
    code = main(run_args(config, source, url, "--json", curated=curated / "sub"))
    out, err = capsys.readouterr()
    assert code == 3
    assert json.loads(out)["status"] == "error"
    channels = {"stdout": out, "stderr": err}
    files = sorted((tmp_path / "outbox").glob("*.json"))
    assert [p.name.rsplit(".", 2)[1] for p in files] == ["alert", "rerun"]
    channels.update({p.name: p.read_text() for p in files})
    with psycopg.connect(postgres_database) as con:
        rows = (
            con.execute("SELECT * FROM etl_audit.run_log").fetchall()
            if con.execute("SELECT to_regclass('etl_audit.run_log')").fetchone()[0]
            else []
        )
    channels["run_log"] = repr(rows)
    if unexpected:
        assert '"locals"' not in err
    forms = {password, quote(password, safe=""), json.dumps(password)[1:-1]}
    for name, text in channels.items():
        for form in forms:
            assert form not in text, f"{name} shows the password as {form!r}"


def test_an_unexpected_error_is_logged_without_frame_locals(capsys):
    # The CLI's logging: a traceback's frame locals once printed the warehouse URL (and
    # any local holding a password or a row of data) in the log line.
    import structlog

    from handler.log import configure_logging

    configure_logging(force=True)

    def connect(url: str) -> None:
        password = url.split(":")[2].split("@")[0]
        raise RuntimeError(f"cannot connect as {len(password)}-character password")

    capsys.readouterr()
    try:
        connect("postgresql://refload:fr4me-l0cal-s3cret@127.0.0.1:5432/db")
    except RuntimeError:
        structlog.get_logger("refload").exception("unexpected error")
    [line] = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["exception"][0]["exc_value"] == "cannot connect as 18-character password"
    assert "fr4me-l0cal-s3cret" not in line
    assert "locals" not in record["exception"][0]["frames"][-1]


@pytest.fixture
def silent_server():
    """A port that accepts connections (the kernel completes them from its backlog) and
    never answers: a channel behind a firewall that drops replies, or a VPC with no route."""
    with socket.create_server(("127.0.0.1", 0), backlog=32) as server:
        yield server.getsockname()[1]


# The blocked channel -> how it is pointed at the silent port.
BLOCKED = {
    "smtp": {"REFLOAD_SMTP_HOST": "127.0.0.1", "REFLOAD_SMTP_PORT": "{port}"},
    "servicenow": {"REFLOAD_SERVICENOW_URL": "http://127.0.0.1:{port}"},
    "ses": {"AWS_ENDPOINT_URL_SESV2": "http://127.0.0.1:{port}"},
    # The ServiceNow credentials' Secrets Manager lookup is what hangs.
    "servicenow secret": {
        "REFLOAD_SERVICENOW_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:sn",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": "http://127.0.0.1:{port}",
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("blocked", BLOCKED)
def test_a_channel_that_never_answers_fails_within_the_timeout_and_the_others_deliver(
    blocked, silent_server, alert_env, monkeypatch, capsys
):
    import threading
    import time

    from tests.conftest import ROOT

    channel = blocked.split()[0]
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "REFLOAD_ALERT_CHANNELS": f"{channel},outbox",
        "REFLOAD_CONNECT_TIMEOUT": "0.5",
        "REFLOAD_READ_TIMEOUT": "0.5",
        "REFLOAD_HTTP_RETRIES": "1",
        **{k: v.format(port=silent_server) for k, v in BLOCKED[blocked].items()},
    }.items():
        monkeypatch.setenv(name, value)
    event = ROOT / "tests" / "events" / "step_notify_catch.json"
    codes: list[int] = []
    started = time.monotonic()
    notify = threading.Thread(
        target=lambda: codes.append(main(["replay", str(event), "--json"])), daemon=True
    )
    notify.start()
    notify.join(timeout=15)  # the defaults' 60 s per attempt would still be waiting
    assert not notify.is_alive(), f"{blocked} still blocks notify"
    assert time.monotonic() - started < 15
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert codes == [1]
    assert summary["alert"][channel]["status"] == "failed"
    assert summary["alert"]["outbox"]["status"] == "sent"
    [logged] = [
        json.loads(line) for line in captured.err.splitlines() if '"alert channel failed"' in line
    ]
    assert logged["channel"] == channel and logged["level"] == "error"
    assert re.search(r"timed out|timeout", logged["error"], re.I), logged["error"]


def test_an_after_publish_failure_says_the_rows_are_published_and_how_to_roll_back(
    table_dir, write, run_cli, tmp_path, capsys, warehouse_url, sql
):
    mapping = "source_column,target_column,data_type\ncode,code,varchar(3)\n"
    test = {"type": "accepted_values", "column": "code", "values": ["AA", "BB"]}
    config = table_dir(mapping, quality_tests=[test])
    outbox = tmp_path / "outbox"

    def alert_text(run_id: str) -> str:
        [alert] = [json.loads(p.read_text()) for p in outbox.glob(f"*-{run_id}.alert.json")]
        return str(alert["text"])

    # A first run that fails after publishing: the rows are there, and nothing to go back to.
    code, first = run_cli(config, write("a.csv", "code\nAA\nZZ\n"))
    assert code == 1 and first["published"] is True
    text = alert_text(first["run_id"])
    assert "The rows ARE published: ref.t_codes holds this run's 2 rows" in text
    assert "No earlier run of t_codes published and passed its tests" in text

    assert run_cli(config, write("b.csv", "code\nAA\nBB\n"))[0] == 0
    passing = run_cli(config, write("c.csv", "code\nBB\n"))[1]["run_id"]
    code, bad = run_cli(config, write("d.csv", "code\nAA\nZA\n"))
    assert code == 1
    text = alert_text(bad["run_id"])
    command = f"python -m handler rollback t_codes --to {passing}"
    assert "The rows ARE published" in text and f"  {command}\n" in text
    assert sql("SELECT code FROM ref.t_codes ORDER BY code") == [("AA",), ("ZA",)]

    # The command the alert gives puts the last passing run's rows back.
    root = ["--config-root", str(config.parent), "--warehouse", warehouse_url, "--json"]
    capsys.readouterr()
    assert main([*command.split()[3:], *root]) == 0, capsys.readouterr()
    assert sql("SELECT code FROM ref.t_codes") == [("BB",)]
