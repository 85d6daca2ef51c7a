"""Incidents that close: the next passing run resolves the table's open ServiceNow incidents
(a local HTTP server) and mails "recovered" to the alert recipients (aiosmtpd)."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug import Request, Response

from handler.cli import main
from tests.conftest import CONFIGS, SAMPLES, run_args

SENDER, ON_CALL = "refload@example.com", "data-oncall@example.com"
COUNTRY_XLSX = next((SAMPLES / "country").glob("*/*"))
CURRENCY_CSV = next((SAMPLES / "currency").glob("*/*"))
FAILING_TEST = {"type": "regex", "name": "name_starts_ascii", "column": "name", "pattern": "^[A-Z]"}
AUTH = "Basic " + base64.b64encode(b"refload:sn-secret").decode()


class ServiceNow:
    """The incident table, served like the Table API: query (= and STARTSWITH), create,
    update; state 6 resolves (the incident is no longer active)."""

    def __init__(self, httpserver: Any) -> None:
        self.incidents: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        base = "/api/now/table/incident"
        httpserver.expect_request(base, method="GET").respond_with_handler(self.query)
        httpserver.expect_request(base, method="POST").respond_with_handler(self.create)
        httpserver.expect_request(
            re.compile(f"{base}/[^/]+$"), method="PATCH"
        ).respond_with_handler(self.update)

    def _refused(self, request: Request) -> Response | None:
        self.requests.append((request.method, request.full_path))
        if request.headers.get("Authorization") != AUTH:
            return Response("{}", 401)
        return None

    def query(self, request: Request) -> Response:
        if refused := self._refused(request):
            return refused
        condition, active, *order = request.args["sysparm_query"].split("^")
        assert active == "active=true" and order in ([], ["ORDERBYsys_id"])
        field_op, _, value = re.match(r"(correlation_id(=|STARTSWITH))(.*)", condition).groups()
        found = [
            {"sys_id": i["sys_id"], "number": i["number"], "correlation_id": i["correlation_id"]}
            for i in self.incidents.values()
            if i["active"]
            and (
                i["correlation_id"] == value
                if field_op.endswith("=")
                else i["correlation_id"].startswith(value)
            )
        ]
        # Pages as the Table API gives them (its default limit is 10,000 rows).
        offset = int(request.args.get("sysparm_offset", 0))
        limit = int(request.args.get("sysparm_limit", 10_000))
        found = sorted(found, key=lambda i: i["sys_id"])[offset : offset + limit]
        return Response(json.dumps({"result": found}), 200)

    def create(self, request: Request) -> Response:
        if refused := self._refused(request):
            return refused
        number = len(self.incidents) + 1
        incident = {
            **request.get_json(),
            "sys_id": f"sys-{number}",
            "number": f"INC00{number}",
            "active": True,
            "state": "1",
            "work_notes": [],
        }
        self.incidents[incident["sys_id"]] = incident
        return Response(json.dumps({"result": incident}), 201)

    def update(self, request: Request) -> Response:
        if refused := self._refused(request):
            return refused
        incident = self.incidents[request.path.rsplit("/", 1)[1]]
        change = request.get_json()
        incident["work_notes"].append(change.pop("work_notes"))
        incident.update(change)
        incident["active"] = incident["state"] not in ("6", "7")
        return Response(json.dumps({"result": incident}), 200)


@pytest.fixture
def servicenow(httpserver, monkeypatch) -> ServiceNow:
    monkeypatch.setenv("REFLOAD_SERVICENOW_URL", httpserver.url_for("/"))
    monkeypatch.setenv("REFLOAD_SERVICENOW_USER", "refload")
    monkeypatch.setenv("REFLOAD_SERVICENOW_PASSWORD", "sn-secret")
    monkeypatch.setenv("REFLOAD_HTTP_RETRIES", "0")
    return ServiceNow(httpserver)


@pytest.fixture
def mailbox(monkeypatch) -> Iterator[list[email.message.EmailMessage]]:
    """A real SMTP server on loopback (aiosmtpd); yields the messages it received."""
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Keep:
        async def handle_DATA(self, server, session, envelope):
            received.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("REFLOAD_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("REFLOAD_SMTP_PORT", str(port))
    monkeypatch.setenv("REFLOAD_ALERT_EMAIL_FROM", SENDER)
    monkeypatch.setenv("REFLOAD_ALERT_EMAIL_TO", ON_CALL)
    yield received
    controller.stop()


@pytest.fixture
def country(tmp_path: Path) -> Path:
    folder = tmp_path / "configs"
    shutil.copytree(CONFIGS, folder)
    return folder / "dim_country.json"


def _set_failing_test(config: Path, failing: bool) -> None:
    body = json.loads(config.read_text())
    tests = [t for t in body["quality_tests"] if t.get("name") != FAILING_TEST["name"]]
    body["quality_tests"] = [*tests, FAILING_TEST] if failing else tests
    config.write_text(json.dumps(body))


def _run(config: Path, source: Path, warehouse_url: str, capsys) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(run_args(config, source, warehouse_url, "--json"))
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_the_next_passing_run_resolves_the_incident_and_mails_recovered(
    country, warehouse_url, servicenow, mailbox, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "servicenow,smtp,outbox")
    _set_failing_test(country, failing=True)
    code, failed = _run(country, COUNTRY_XLSX, warehouse_url, capsys)
    assert code == 1 and failed["alert"]["servicenow"]["ref"] == "created INC001"
    [incident] = servicenow.incidents.values()
    assert incident["active"] and incident["correlation_id"].startswith("refload:dim_country:")

    _set_failing_test(country, failing=False)  # the team fixes the test; the run passes
    code, passed = _run(country, COUNTRY_XLSX, warehouse_url, capsys)
    assert code == 0
    assert not incident["active"] and incident["state"] == "6"
    assert incident["close_code"] == "Solution provided"
    assert incident["work_notes"] == [
        f"Recovered: run {passed['run_id']} loaded dim_country and passed its tests. "
        "Resolved by refload."
    ]
    alert, recovered = mailbox
    assert alert["Subject"].startswith("[refload] dim_country failed")
    assert recovered["Subject"].startswith("[refload] dim_country recovered on ")
    assert (recovered["From"], recovered["To"]) == (SENDER, ON_CALL)  # the alert's recipients
    body = recovered.get_body(("plain",)).get_content()
    assert f"Run id:        {passed['run_id']}" in body
    assert f"Failed run:    {failed['run_id']}" in body
    [outbox_note] = (tmp_path / "outbox").glob("*.recovered.json")
    assert json.loads(outbox_note.read_text())["run_id"] == passed["run_id"]

    # Another passing run (same file, so nothing new is published): nothing open, nothing
    # failed before it, nothing sent.
    code, _ = _run(country, COUNTRY_XLSX, warehouse_url, capsys)
    assert code == 0 and len(mailbox) == 2
    assert [m for m, _ in servicenow.requests].count("PATCH") == 1


def test_auto_resolve_can_be_turned_off(country, warehouse_url, servicenow, monkeypatch, capsys):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "servicenow")
    monkeypatch.setenv("REFLOAD_SERVICENOW_AUTO_RESOLVE", "false")
    _set_failing_test(country, failing=True)
    assert _run(country, COUNTRY_XLSX, warehouse_url, capsys)[0] == 1
    _set_failing_test(country, failing=False)
    assert _run(country, COUNTRY_XLSX, warehouse_url, capsys)[0] == 0
    [incident] = servicenow.incidents.values()
    assert incident["active"] and incident["work_notes"] == []
    assert [m for m, _ in servicenow.requests] == ["GET", "POST"]


def test_a_stale_table_incident_closes_when_its_file_arrives(
    sample_configs, warehouse_url, servicenow, monkeypatch, capsys
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "servicenow")
    config = sample_configs / "dim_currency.json"
    body = json.loads(config.read_text())
    config.write_text(
        json.dumps({**body, "freshness": {"error_after": {"count": 1, "period": "day"}}})
    )
    assert _run(config, CURRENCY_CSV, warehouse_url, capsys)[0] == 0
    args = ["freshness", "--config-root", str(sample_configs), "--warehouse", warehouse_url]
    assert main([*args, "--now", "2099-01-01T00:00:00Z"]) == 1
    [incident] = servicenow.incidents.values()
    assert incident["correlation_id"] == "refload:dim_currency:freshness" and incident["active"]

    # The vendor's next file arrives (new content) and loads.
    fresh = sample_configs.parent / "iso4217.csv"
    fresh.write_bytes(CURRENCY_CSV.read_bytes().rsplit(b"\n", 2)[0] + b"\n")
    code, passed = _run(config, fresh, warehouse_url, capsys)
    assert code == 0 and not incident["active"]
    assert passed["run_id"] in incident["work_notes"][0]


def test_a_broken_servicenow_never_fails_a_passing_run(
    country, warehouse_url, httpserver, monkeypatch, capsys
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "servicenow")
    monkeypatch.setenv("REFLOAD_SERVICENOW_URL", httpserver.url_for("/"))
    monkeypatch.setenv("REFLOAD_SERVICENOW_USER", "refload")
    monkeypatch.setenv("REFLOAD_HTTP_RETRIES", "0")
    httpserver.expect_request("/api/now/table/incident").respond_with_data("{}", status=500)
    capsys.readouterr()
    code = main(run_args(country, COUNTRY_XLSX, warehouse_url, "--json"))
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["status"] == "passed"
    assert "recovery channel failed" in captured.err and "HTTP 500" in captured.err


def test_a_passing_run_resolves_every_open_incident_of_its_table_page_by_page(
    country, warehouse_url, servicenow, monkeypatch, capsys
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "servicenow")
    # Open incidents left by past failures, one per cause; and one of another table.
    tables = [("dim_country", f"cause-{n}") for n in range(1, 131)] + [("dim_currency", "x")]
    for number, (table, cause) in enumerate(tables, start=1):
        sys_id = f"sys-{number:03d}"
        servicenow.incidents[sys_id] = {
            "sys_id": sys_id,
            "number": f"INC{number:04d}",
            "correlation_id": f"refload:{table}:{cause}",
            "active": True,
            "state": "1",
            "work_notes": [],
        }
    capsys.readouterr()
    code = main(run_args(country, COUNTRY_XLSX, warehouse_url, "--json"))
    out, err = capsys.readouterr()
    passed = json.loads(out)
    assert code == 0
    [line] = [json.loads(x) for x in err.splitlines() if '"table recovered"' in x]
    named = ", ".join(f"INC{n:04d}" for n in range(1, 21))  # the step's payload stays small
    assert line["servicenow"] == {"status": "resolved", "ref": f"{named} and 110 more"}
    still_open = [i["number"] for i in servicenow.incidents.values() if i["active"]]
    assert still_open == ["INC0131"]  # dim_currency's
    note = f"Recovered: run {passed['run_id']} loaded dim_country and passed its tests."
    resolved = [i for i in servicenow.incidents.values() if not i["active"]]
    assert len(resolved) == 130
    assert all(i["work_notes"] == [f"{note} Resolved by refload."] for i in resolved)
