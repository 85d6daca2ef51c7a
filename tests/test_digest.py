"""`python -m handler digest` and `{"step": "digest"}`: one email for the fleet over a window."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
from pathlib import Path

import pytest

from handler import lambda_handler
from handler.cli import main

MAPPING = """
source_column,target_column,data_type,nullable
code,code,varchar(8),false
label,label,string,true
"""
DAILY = {"error_after": {"count": 1, "period": "day"}}
SENDER, FLEET_LIST = "refload@example.com", "data-team@example.com"


def _csv(codes: range, label: str = "label") -> str:
    return "code,label\n" + "".join(f"C{i:03d},{label} {i}\n" for i in codes)


@pytest.fixture
def fleet(table_dir, write, run_cli, sql) -> Path:
    """Six tables: failed, warned, stale, changed unusually, fine, and one that failed then
    passed (recovered)."""
    warn = [{"type": "regex", "column": "label", "pattern": "^label", "severity": "warn"}]
    must = [{"type": "regex", "column": "label", "pattern": "^label"}]
    key = {"primary_key": ["code"]}
    failing = table_dir(MAPPING, name="t_failing", quality_tests=must)
    warned = table_dir(MAPPING, name="t_warned", quality_tests=warn)
    stale = table_dir(MAPPING, name="t_stale", freshness=DAILY)
    changed = table_dir(MAPPING, name="t_changed", load_mode="truncate", **key)
    fine = table_dir(MAPPING, name="t_fine", load_mode="truncate", **key)
    recovered = table_dir(MAPPING, name="t_recovered", quality_tests=must)
    assert run_cli(failing, write("f1.csv", _csv(range(3))))[0] == 0
    assert run_cli(failing, write("f2.csv", _csv(range(3), "BAD")))[0] == 1
    assert run_cli(failing, write("f3.csv", "code,label\n,missing code\n"))[0] == 2
    assert run_cli(warned, write("w1.csv", _csv(range(3), "odd")))[0] == 0
    assert run_cli(stale, write("s1.csv", _csv(range(6))))[0] == 0
    sql(
        "UPDATE etl_audit.load_ledger SET loaded_at = loaded_at - INTERVAL '3 days' "
        "WHERE table_name = 't_stale'"
    )
    # 20 rows, then 1 of 20 changed (5%), then half of them replaced (50%).
    assert run_cli(changed, write("c1.csv", _csv(range(20))))[0] == 0
    assert run_cli(changed, write("c2.csv", _csv(range(1, 21))))[0] == 0
    assert run_cli(changed, write("c3.csv", _csv(range(11, 31))))[0] == 0
    assert run_cli(fine, write("ok1.csv", _csv(range(20))))[0] == 0
    assert run_cli(fine, write("ok2.csv", _csv(range(1, 21))))[0] == 0
    assert run_cli(recovered, write("r1.csv", _csv(range(3), "BAD")))[0] == 1
    assert run_cli(recovered, write("r2.csv", _csv(range(3))))[0] == 0
    return failing.parent


@pytest.mark.slow
def test_one_digest_for_the_fleet_with_counts_cost_and_history_links(
    fleet, warehouse_url, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("REFLOAD_STATUS_URL", "https://status.example.com/fleet.html")
    outbox = tmp_path / "digest-outbox"
    argv = ["digest", "--config-root", str(fleet), "--warehouse", warehouse_url]
    capsys.readouterr()
    assert main([*argv, "--outbox", str(outbox), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    since = dt.datetime.fromisoformat(found["since"].replace("Z", "+00:00"))
    assert dt.timedelta(hours=23, minutes=59) < dt.datetime.now(dt.UTC) - since
    by_table = {t["table"]: t for t in found["tables"]}
    # Worst first; the fine table is only counted.
    assert [t["table"] for t in found["tables"]] == [
        "t_failing",
        "t_stale",
        "t_warned",
        "t_changed",
        "t_recovered",
    ]
    for table in found["tables"]:
        assert {"table", "status", "runs", "failures", "last_error"} <= set(table)
    failing = by_table["t_failing"]
    assert (failing["status"], failing["runs"], failing["failures"]) == ("failed", 3, 2)
    assert failing["last_error"].startswith("RejectedInput: ")
    assert "code" in failing["last_error"]
    assert by_table["t_stale"]["status"] == "stale"
    assert (by_table["t_warned"]["status"], by_table["t_warned"]["warnings"]) == ("warned", 1)
    assert (by_table["t_changed"]["status"], by_table["t_changed"]["change_pct"]) == (
        "changed",
        100.0,  # 10 removed + 10 added of the 20 rows before
    )
    recovered = by_table["t_recovered"]
    assert (recovered["status"], recovered["failures"], recovered["runs"]) == ("recovered", 1, 2)
    assert recovered["history_url"] == "https://status.example.com/fleet.html#table-t_recovered"
    assert found["counts"] == {
        "failed": 1,
        "stale": 1,
        "warned": 1,
        "changed": 1,
        "recovered": 1,
        "ok": 1,
    }
    assert found["runs"] == 12
    # The window's runs summed: the listed tables' and the fine one's.
    listed = sum(t["cost_usd"] for t in found["tables"])
    assert 0 < listed < found["cost_usd"]

    # ONE file in the outbox, whatever the number of tables.
    [sent] = list(outbox.iterdir())
    assert sent.name.endswith(".digest.json")
    report = json.loads(sent.read_text())
    assert report["subject"].startswith("[refload] digest 24 h: 1 failed, 1 stale, 1 warned")
    assert "of 6 tables, 12 runs" in report["subject"]
    for name in by_table:
        assert f"https://status.example.com/fleet.html#table-{name}" in report["html"]
    assert "t_fine" not in report["text"]

    # The text: the same digest, a line per table and where to read its history.
    assert main([*argv, "--since", "1", "--outbox", str(outbox)]) == 0
    text = capsys.readouterr().out
    assert "FAILED          t_failing  runs 3, failures 2" in text
    assert "    history: https://status.example.com/fleet.html#table-t_failing" in text
    # A window before every run: nothing ran, the stale table is still stale.
    assert main([*argv, "--now", "2020-01-01T00:00:00", "--json"]) == 0
    empty = json.loads(capsys.readouterr().out)
    assert empty["runs"] == 0 and empty["tables"] == []


@pytest.fixture
def ses(s3):
    """moto SES (as tests/test_alerts.py has it): the raw messages it was sent."""
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    boto3.client("ses", region_name="us-east-1").verify_email_identity(EmailAddress=SENDER)
    return ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_the_scheduled_step_emails_the_digest_through_ses(fleet, warehouse_url, ses, monkeypatch):
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "ses,servicenow")
    monkeypatch.setenv("REFLOAD_ALERT_EMAIL_FROM", SENDER)
    monkeypatch.setenv("REFLOAD_ALERT_EMAIL_TO", FLEET_LIST)
    event = {"step": "digest", "config_root": str(fleet), "warehouse": warehouse_url}
    result = lambda_handler(event, None)
    # ServiceNow is no channel for a digest: it opens no incident.
    assert set(result["sent"]) == {"ses"} and result["sent"]["ses"]["status"] == "sent"
    assert {t["table"]: t["status"] for t in result["tables"]}["t_failing"] == "failed"
    [sent] = ses
    message = email.message_from_bytes(sent.raw_data.encode(), policy=email.policy.default)
    assert message["To"] == FLEET_LIST
    assert message["Subject"].startswith("[refload] digest 24 h: 1 failed")
    body = message.get_body(("plain",)).get_content()
    assert "python -m handler history t_failing" in body
    assert "t_fine" not in body


def test_a_bad_window_is_a_config_error(tmp_path, warehouse_url, capsys):
    capsys.readouterr()
    code = main(
        ["digest", "--config-root", str(tmp_path), "--warehouse", warehouse_url, "--since", "0"]
    )
    assert code == 2
    assert "since: must be a number of hours above 0" in capsys.readouterr().err


@pytest.mark.parametrize("since", ["1e9", "nan", "inf", "99999999999999"])
def test_a_window_no_clock_holds_is_a_config_error(tmp_path, warehouse_url, capsys, since):
    capsys.readouterr()
    argv = ["digest", "--config-root", str(tmp_path), "--warehouse", warehouse_url]
    code = main([*argv, "--since", since, "--outbox", str(tmp_path / "outbox")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "since: must be a number of hours above 0 and at most 878400" in err
    assert "Error:" not in err.replace("ConfigError:", "")  # no OverflowError/ValueError
    assert not (tmp_path / "outbox").exists()


def test_a_window_in_which_nothing_ran_is_not_all_fine(
    table_dir, warehouse_url, capsys, tmp_path, sql
):
    sql("SELECT 1")  # the warehouse is there (DuckDB's file too), no run yet
    root = table_dir(MAPPING, name="t_quiet").parent
    outbox = tmp_path / "outbox"
    capsys.readouterr()
    argv = ["digest", "--config-root", str(root), "--warehouse", warehouse_url]
    assert main([*argv, "--outbox", str(outbox)]) == 0
    text = capsys.readouterr().out
    assert "No table ran in the window: nothing failed, and nothing was loaded either." in text
    assert "as usual" not in text
    [sent] = list(outbox.iterdir())
    subject = json.loads(sent.read_text())["subject"]
    assert subject.startswith("[refload] digest 24 h: nothing ran of 1 tables, 0 runs")


@pytest.mark.parametrize(
    ("now", "message"),
    [
        ("9999-12-31T23:59:59-05:00", "--now: '9999-12-31T23:59:59-05:00' is not an ISO 8601"),
        ("0001-01-01T00:00:00", "--since 24 hours before --now 0001-01-01T00:00:00 is before"),
    ],
)
def test_a_now_at_the_calendar_s_edge_is_a_config_error(
    tmp_path, warehouse_url, capsys, now, message
):
    capsys.readouterr()
    argv = ["digest", "--config-root", str(tmp_path), "--warehouse", warehouse_url]
    assert main([*argv, "--now", now, "--outbox", str(tmp_path / "outbox")]) == 2
    err = capsys.readouterr().err
    assert message in err and "OverflowError" not in err
    assert not (tmp_path / "outbox").exists()


def test_a_digest_the_outbox_cannot_take_is_exit_3_naming_the_folder(
    table_dir, warehouse_url, sql, capsys, tmp_path
):
    root = table_dir(MAPPING, name="t_quiet").parent
    sql("SELECT 1")  # the warehouse is there, no run yet
    (tmp_path / "a_file").write_text("not a folder")
    outbox = tmp_path / "a_file" / "outbox"  # its parent is a file: nothing can be written
    argv = ["digest", "--config-root", str(root), "--warehouse", warehouse_url]
    capsys.readouterr()
    assert main([*argv, "--outbox", str(outbox)]) == 3
    [line] = [x for x in capsys.readouterr().err.splitlines() if "AlertNotDelivered" in x]
    assert (
        line.startswith("AlertNotDelivered: digest not delivered (outbox: ")
        and str(tmp_path / "a_file") in line
    )
    assert main([*argv, "--outbox", str(outbox), "--json"]) == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out)["sent"]["outbox"]["status"] == "failed"
    assert "AlertNotDelivered: digest not delivered (outbox: " in captured.err


def test_a_digest_channel_missing_its_settings_is_exit_2_naming_them(
    table_dir, warehouse_url, sql, capsys, monkeypatch
):
    root = table_dir(MAPPING, name="t_quiet").parent
    sql("SELECT 1")  # the warehouse is there, no run yet
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "ses")
    monkeypatch.delenv("REFLOAD_ALERT_EMAIL_FROM", raising=False)
    monkeypatch.delenv("REFLOAD_ALERT_EMAIL_TO", raising=False)
    capsys.readouterr()
    assert main(["digest", "--config-root", str(root), "--warehouse", warehouse_url]) == 2
    [line] = [x for x in capsys.readouterr().err.splitlines() if "not delivered" in x]
    assert line.startswith("ConfigError: digest not delivered (ses: ConfigError: email alerts ")
    assert "REFLOAD_ALERT_EMAIL_FROM" in line
