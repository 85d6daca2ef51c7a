"""One incident per problem (steps.shared.alerts.incidents): owners, repeats, reminders,
concurrent failures, and the fleet's infrastructure incident. ServiceNow is the local HTTP
server of tests/test_recovery.py, SES is moto's."""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from handler.cli import main
from tests import test_recovery as recovery
from tests.conftest import CONFIGS, ROOT, run_args
from tests.test_recovery import COUNTRY_XLSX, CURRENCY_CSV, ON_CALL, SENDER, _set_failing_test

OWNER = {
    "name": "geo-data",
    "emails": ["geo@example.com", "geo-lead@example.com"],
    "servicenow_assignment_group": "Geo Data",
}


@pytest.fixture
def servicenow(httpserver, monkeypatch: pytest.MonkeyPatch) -> recovery.ServiceNow:
    """tests/test_recovery.py's incident table, served on a local port."""
    monkeypatch.setenv("REFLOAD_SERVICENOW_URL", httpserver.url_for("/"))
    monkeypatch.setenv("REFLOAD_SERVICENOW_USER", "refload")
    monkeypatch.setenv("REFLOAD_SERVICENOW_PASSWORD", "sn-secret")
    monkeypatch.setenv("REFLOAD_HTTP_RETRIES", "0")
    return recovery.ServiceNow(httpserver)


@pytest.fixture
def ses(s3) -> list[Any]:
    """moto SES with the sender verified: the messages it sent."""
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    boto3.client("ses", region_name="us-east-1").verify_email_identity(EmailAddress=SENDER)
    sent: list[Any] = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    return sent


@pytest.fixture
def country(tmp_path: Path) -> Path:
    folder = tmp_path / "configs"
    shutil.copytree(CONFIGS, folder)
    return folder / "dim_country.json"


@pytest.fixture
def mail_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLOAD_ALERT_EMAIL_FROM", SENDER)
    monkeypatch.setenv("REFLOAD_ALERT_EMAIL_TO", ON_CALL)


def _run(config: Path, source: Path, warehouse: str, capsys) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(run_args(config, source, warehouse, "--json"))
    return code, json.loads(capsys.readouterr().out)


def _alerts(tmp_path: Path) -> list[dict[str, Any]]:
    files = sorted((tmp_path / "outbox").glob("*.alert.json"))
    return [json.loads(f.read_text()) for f in files]


def _emails(sent: list[Any]) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(m.raw_data.encode(), policy=email.policy.default) for m in sent
    ]


def _with_owner(config: Path, **owner_keys: Any) -> None:
    body = json.loads(config.read_text())
    config.write_text(json.dumps({**body, **owner_keys}))


def test_the_owner_gets_the_alert_and_its_group_the_incident(
    country, servicenow, ses, mail_env, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "outbox,ses,servicenow")
    monkeypatch.setenv("REFLOAD_SERVICENOW_ASSIGNMENT_GROUP", "Data Platform")
    _with_owner(country, owner=OWNER)
    _set_failing_test(country, failing=True)
    code, _ = _run(country, COUNTRY_XLSX, f"duckdb:///{tmp_path / 'w.duckdb'}", capsys)

    assert code == 1
    [message] = _emails(ses)
    assert message["To"] == "geo@example.com, geo-lead@example.com"
    [incident] = servicenow.incidents.values()
    assert incident["assignment_group"] == "Geo Data"
    [alert] = _alerts(tmp_path)
    assert alert["to"] == OWNER["emails"]
    assert alert["assignment_group"] == "Geo Data"
    assert alert["incident_key"] == incident["correlation_id"]
    assert alert["incident_key"].startswith("refload:dim_country:")
    assert alert["occurrences"] == 1


def test_alert_emails_is_an_alias_of_the_owners_emails(
    country, ses, mail_env, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "outbox,ses")
    _with_owner(country, alert_emails=["geo@example.com"], owner={"name": "geo-data"})
    _set_failing_test(country, failing=True)
    assert _run(country, COUNTRY_XLSX, f"duckdb:///{tmp_path / 'w.duckdb'}", capsys)[0] == 1
    [message] = _emails(ses)
    assert message["To"] == "geo@example.com"
    [alert] = _alerts(tmp_path)
    assert alert["to"] == ["geo@example.com"]
    assert alert["assignment_group"] is None  # neither the owner nor the default names one


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"alert_emails": ["a@example.com"], "owner": {"emails": ["b@example.com"]}},
            "alert_emails and owner.emails differ",
        ),
        ({"owner": {"emails": ["geo team"]}}, "owner.emails: not an email address: 'geo team'"),
        ({"owner": {"team": "geo"}}, "owner.team"),
    ],
)
def test_check_rejects_a_bad_owner(country, keys, message, capsys):
    _with_owner(country, **keys)
    code = main(["check", str(country.parent)])
    out = capsys.readouterr()
    assert code == 2
    assert message in out.out + out.err
    assert "dim_country.json" in out.out + out.err


def test_status_shows_the_owner(country, capsys, tmp_path):
    _with_owner(country, owner=OWNER)
    root, warehouse = str(country.parent), f"duckdb:///{tmp_path / 'w.duckdb'}"
    duckdb.connect(str(tmp_path / "w.duckdb")).close()  # status reads an existing one
    assert main(["status", "--config-root", root, "--warehouse", warehouse, "--json"]) == 0
    tables = {t["table"]: t for t in json.loads(capsys.readouterr().out)["tables"]}
    assert tables["dim_country"]["owner"] == OWNER
    assert tables["dim_currency"]["owner"] is None
    assert main(["status", "--config-root", root, "--warehouse", warehouse]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("dim_country")]
    assert line.endswith("owner geo-data")


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_a_repeat_while_open_only_counts_until_a_reminder_is_due_and_a_pass_resolves_it(
    country, warehouse_url, servicenow, ses, mail_env, sql, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "outbox,ses,servicenow")
    _set_failing_test(country, failing=True)
    (code, _), (again, second) = (
        _run(country, COUNTRY_XLSX, warehouse_url, capsys) for _ in range(2)
    )

    assert code == again == 1
    [alert] = _alerts(tmp_path)  # the repeat wrote no file and sent no email
    assert len(ses) == 1
    assert second["alert"]["outbox"]["status"] == "suppressed"
    assert second["alert"]["ses"]["status"] == "suppressed"
    assert second["alert"]["servicenow"]["ref"] == "updated INC001"
    [incident] = servicenow.incidents.values()
    [note] = incident["work_notes"]
    assert note.startswith(f"Failed again: run {second['run_id']} (occurrence 2, first seen ")
    assert sql("SELECT status, occurrences, cause FROM etl_audit.incidents") == [
        ("open", 2, "name_starts_ascii")
    ]

    # Past REFLOAD_ALERT_REMIND_HOURS one run reminds (a new file, a new email), once.
    monkeypatch.setenv("REFLOAD_ALERT_REMIND_HOURS", "0.0002")  # 0.72 s
    time.sleep(0.8)
    assert _run(country, COUNTRY_XLSX, warehouse_url, capsys)[0] == 1
    alert, reminder = _alerts(tmp_path)
    assert (alert["occurrences"], reminder["occurrences"]) == (1, 3)
    assert reminder["first_seen"] == alert["first_seen"]
    assert reminder["incident_key"] == alert["incident_key"]
    page = _emails(ses)[1].get_body(("html",)).get_content()
    first_seen = alert["first_seen"][:19].replace("T", " ")
    assert f"<b>Occurrences:</b> 3 since {first_seen} UTC (first seen)" in page
    assert len(servicenow.incidents) == 1

    # The team fixes it: the passing run resolves the incident; the next failure opens anew.
    _set_failing_test(country, failing=False)
    assert _run(country, COUNTRY_XLSX, warehouse_url, capsys)[0] == 0
    assert incident["state"] == "6"
    assert sql("SELECT status, occurrences FROM etl_audit.incidents") == [("resolved", 3)]
    _set_failing_test(country, failing=True)
    monkeypatch.delenv("REFLOAD_ALERT_REMIND_HOURS")
    assert _run(country, COUNTRY_XLSX, warehouse_url, capsys)[0] == 1
    assert [a["occurrences"] for a in _alerts(tmp_path)] == [1, 3, 1]
    assert len(servicenow.incidents) == 2
    subjects = [m["Subject"].split(" on ")[0] for m in _emails(ses)]
    assert subjects == ["[refload] dim_country failed"] * 2 + [
        "[refload] dim_country recovered",
        "[refload] dim_country failed",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_two_runs_failing_at_once_open_one_incident(
    warehouse_url, servicenow, sql, monkeypatch, tmp_path
):
    """Two processes rejecting the same bad file at the same moment (ingest takes no lock,
    so both reach notify together): one alert file, one ServiceNow incident, a count of 2."""
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "outbox,servicenow")
    bad = tmp_path / "iso4217.csv"
    bad.write_text("Entity,Something else\nAFGHANISTAN,x\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    config = CONFIGS / "dim_currency.json"
    argv = [sys.executable, "-m", "handler", *run_args(config, bad, warehouse_url), "--json"]
    runs = [
        subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outcomes = [(run.communicate(timeout=120), run.returncode) for run in runs]
    assert [code for _, code in outcomes] == [2, 2], [err[-2000:] for (_, err), _ in outcomes]

    assert len(_alerts(tmp_path)) == 1
    [incident] = servicenow.incidents.values()
    [note] = incident["work_notes"]
    assert "(occurrence 2, first seen " in note
    assert sql("SELECT status, occurrences, cause FROM etl_audit.incidents") == [
        ("open", 2, "RejectedInput")
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("down", "error", "markers"),
    [
        # The file cannot be opened (retrying won't help); the markers on S3 (moto).
        ("duckdb", "InfrastructureError", "s3://curated/_refload/incidents"),
        # Connection refused; the markers in the default folder, <outbox>/incidents.
        ("postgresql://refload:refload@127.0.0.1:1/refload_down", "WarehouseUnavailable", None),
    ],
)
def test_an_unreachable_warehouse_is_one_incident_for_the_fleet(
    down, error, markers, s3, servicenow, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "outbox,servicenow")
    if markers:
        monkeypatch.setenv("REFLOAD_INCIDENT_ROOT", markers)
    if down == "duckdb":  # a folder that cannot be made: the warehouse file is unreachable
        (tmp_path / "blocker").write_text("")
        down = f"duckdb:///{tmp_path / 'blocker' / 'w.duckdb'}"
    country, currency = CONFIGS / "dim_country.json", CONFIGS / "dim_currency.json"
    (code, _), (again, second) = (
        _run(config, source, down, capsys)
        for config, source in ((country, COUNTRY_XLSX), (currency, CURRENCY_CSV))
    )

    assert code == again == 3
    [alert] = _alerts(tmp_path)
    assert alert["incident_key"] == "refload::infrastructure"
    assert alert["error"]["type"] == error
    assert second["alert"]["outbox"]["status"] == "suppressed"
    [incident] = servicenow.incidents.values()
    assert incident["correlation_id"] == "refload::infrastructure"
    [note] = incident["work_notes"]
    assert "Tables hit:   2: dim_country, dim_currency" in note

    # A reminder once REFLOAD_ALERT_REMIND_HOURS passed: one new file, with the count.
    monkeypatch.setenv("REFLOAD_ALERT_REMIND_HOURS", "0.0002")  # 0.72 s
    time.sleep(0.8)
    assert _run(currency, CURRENCY_CSV, down, capsys)[0] == 3
    assert [a["occurrences"] for a in _alerts(tmp_path)] == [1, 3]
    assert _alerts(tmp_path)[1]["tables"] == ["dim_country", "dim_currency"]

    # The warehouse is back: the next run that reaches it resolves the fleet's incident.
    assert _run(currency, CURRENCY_CSV, f"duckdb:///{tmp_path / 'w.duckdb'}", capsys)[0] == 0
    assert incident["state"] == "6"
    assert (
        "reached the warehouse again. Tables hit: dim_country, dim_currency."
        in (incident["close_notes"])
    )
    [recovered] = (tmp_path / "outbox").glob("*.recovered.json")
    assert json.loads(recovered.read_text())["tables"] == ["dim_country", "dim_currency"]
    if markers:
        assert s3.list_objects_v2(Bucket="curated", Prefix="_refload/").get("KeyCount") == 0
    else:
        folder = tmp_path / "outbox" / "incidents" / "infrastructure"
        assert not [p for p in folder.rglob("*") if p.is_file()]


def test_an_alert_that_reached_nobody_is_sent_by_the_next_failure(
    country, ses, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "ses")  # no sender set yet: SES cannot send
    _set_failing_test(country, failing=True)
    warehouse = f"duckdb:///{tmp_path / 'w.duckdb'}"
    code, first = _run(country, COUNTRY_XLSX, warehouse, capsys)
    assert code == 1 and first["alert"]["ses"]["status"] == "failed"

    monkeypatch.setenv("REFLOAD_ALERT_EMAIL_FROM", SENDER)
    monkeypatch.setenv("REFLOAD_ALERT_EMAIL_TO", ON_CALL)
    code, second = _run(country, COUNTRY_XLSX, warehouse, capsys)
    assert code == 1 and second["alert"]["ses"]["status"] == "sent"  # not "suppressed"
    [message] = _emails(ses)
    assert "Occurrences:  2 since " in message.get_body(("plain",)).get_content()
