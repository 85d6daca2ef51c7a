"""Learned bounds (`"auto": true` on row_count_change and changes_within) and learned
freshness (`"freshness": {"expect": "auto"}`), through the CLI (steps/shared/checks/learned.py,
steps/freshness_learned.py)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from handler import lambda_handler
from handler.cli import main

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(8),,,false,\nn,n,integer,,,,\n"
)
AUTO_TESTS = [
    {"type": "row_count_change", "auto": True},
    {"type": "changes_within", "auto": True},
]


def _rows(codes: range, changed: int = -1) -> str:
    """A file of keyed rows; the row `changed` gets a new value (one changed key)."""
    return "code,n\n" + "".join(f"K{i},{i * 10 + (i == changed)}\n" for i in codes)


def _dq_rows(sql, test_type: str) -> list[tuple[str, str, str, str]]:
    return sql(
        "SELECT status, observed_value, expected, details FROM etl_audit.data_quality_tests "
        "WHERE test_type = ? ORDER BY executed_at",
        test_type,
    )


@pytest.mark.slow
def test_auto_bounds_learn_for_five_publishes_then_a_drop_explains_itself(
    table_dir, write, run_cli, sql
):
    config = table_dir(MAPPING, primary_key=["code"], quality_tests=AUTO_TESTS)
    # Six publishes growing by one row in a hundred, one key changed each time: the first
    # is a first load, the next five learn (0..4 earlier changes to learn from).
    for i in range(6):
        code, summary = run_cli(config, write(f"f{i}.csv", _rows(range(100 + i), changed=i)))
        assert code == 0, summary["error"]
    statuses = [row[0] for row in _dq_rows(sql, "row_count_change")]
    assert statuses == ["pass", "learning", "learning", "learning", "learning", "learning"]
    assert _dq_rows(sql, "row_count_change")[-1][1:3] == (
        "+1.0% rows",
        "learning: 4 of 5 publishes",
    )
    assert [row[0] for row in _dq_rows(sql, "changes_within")][1:] == ["learning"] * 5

    # A steady publish: learned, passes.
    code, summary = run_cli(config, write("f6.csv", _rows(range(106), changed=6)))
    assert code == 0, summary["checks"]
    assert [c["status"] for c in summary["checks"]] == ["pass", "pass"]

    # Half the rows gone: both fail, and say what is usual.
    code, summary = run_cli(config, write("f7.csv", _rows(range(53))))
    assert code == 1
    by_type = {c["type"]: c for c in summary["checks"]}
    assert by_type["row_count_change"]["status"] == "fail"
    assert by_type["changes_within"]["status"] == "fail"
    status, observed, expected, details = _dq_rows(sql, "row_count_change")[-1]
    assert (status, observed) == ("fail", "-50.0% rows")
    # Every earlier change was about +1%: a floor of +-1 point around it.
    assert expected == "usual +0.0%..+2.0%"
    learned = json.loads(details)["learned"]
    assert learned["publishes"] == 6 and learned["high_pct"] == pytest.approx(1.98, abs=0.01)
    assert json.loads(details)["explanation"] == "-50.0% rows; usual +0.0%..+2.0%"
    status, observed, expected, details = _dq_rows(sql, "changes_within")[-1]
    assert status == "fail"
    assert json.loads(details)["over_limit"] == ["removed"]
    assert json.loads(details)["explanation"].startswith("removed 50.00%; usual +0.0%..+1.0%")


def test_auto_with_max_pct_caps_the_bounds_and_holds_while_learning(table_dir, write, run_cli, sql):
    config = table_dir(
        MAPPING, quality_tests=[{"type": "row_count_change", "auto": True, "max_pct": 10}]
    )
    assert run_cli(config, write("a.csv", _rows(range(100))))[0] == 0
    code, summary = run_cli(config, write("b.csv", _rows(range(50))))
    assert code == 1
    check = summary["checks"][0]
    assert (check["status"], check["observed"]) == ("fail", "-50.0% rows")
    assert check["expected"] == "<= 10.0% (learning: 0 of 5 publishes)"


def _shrinking_history(sql) -> None:
    """Five earlier publishes, each shrinking the table by 2% (a ledger as months of runs
    leave it), older than the first real run."""
    for i in range(5):
        sql(
            "INSERT INTO etl_audit.load_ledger (run_id, table_name, target, content_hash, "
            "config_hash, load_mode, rows_loaded, rows_before, rows_after, loaded_at) VALUES "
            "(?, 't_codes', 'ref.t_codes', 'h', 'c', 'truncate', 98, 100, 98, ?)",
            f"old-{i}",
            f"2026-01-0{i + 1} 06:00:00",
        )


def test_a_max_pct_beside_auto_caps_the_learned_bounds(table_dir, write, run_cli, sql):
    test = {"type": "row_count_change", "auto": True, "max_pct": 1.5}
    config = table_dir(MAPPING, quality_tests=[test])
    assert run_cli(config, write("a.csv", _rows(range(100))))[0] == 0
    _shrinking_history(sql)
    # Learned: -3%..-1%; capped at 1.5%: the usual -2% is now too much.
    code, summary = run_cli(config, write("b.csv", _rows(range(98))))
    assert code == 1
    check = summary["checks"][0]
    assert (check["status"], check["observed"], check["expected"]) == (
        "fail",
        "-2.0% rows",
        "usual -1.5%..-1.0%",
    )


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_auto_bounds_on_postgresql_learn_from_the_ledger(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, quality_tests=[AUTO_TESTS[0]])
    assert run_cli(config, write("a.csv", _rows(range(100))))[0] == 0
    _shrinking_history(sql)
    code, summary = run_cli(config, write("b.csv", _rows(range(98))))
    assert code == 0 and summary["checks"][0]["status"] == "pass"
    code, summary = run_cli(config, write("c.csv", _rows(range(108))))
    assert code == 1
    [(status, observed, expected, _)] = _dq_rows(sql, "row_count_change")[-1:]
    assert (status, observed, expected) == ("fail", "+10.2% rows", "usual -3.0%..-1.0%")


def test_check_validates_the_auto_keys(table_dir, capsys):
    config = table_dir(MAPPING, quality_tests=[{"type": "row_count_change"}])
    capsys.readouterr()
    assert main(["check", str(config.parent)]) == 2
    out = capsys.readouterr().out
    assert "quality_tests[0]: needs max_pct, auto: true, or both (max_pct then caps auto)" in out
    table_dir(MAPPING, quality_tests=[{"type": "changes_within", "auto": "often"}])
    assert main(["check", str(config.parent)]) == 2
    assert "quality_tests[0].auto" in capsys.readouterr().out
    table_dir(MAPPING, freshness={"warn_after": {"count": 1, "period": "day"}, "grace_hours": 3})
    assert main(["check", str(config.parent)]) == 2
    assert "freshness: grace_hours is the grace of expect: 'auto', which is not set" in (
        capsys.readouterr().out
    )
    table_dir(MAPPING, freshness={"expect": "always"})
    assert main(["check", str(config.parent)]) == 2
    assert "freshness.expect: Input should be 'auto'" in capsys.readouterr().out


# --- learned freshness ------------------------------------------------------------------


def _days(start: str, end: str, weekdays: range = range(7), skip: tuple[str, ...] = ()):
    day, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    while day <= last:
        if day.weekday() in weekdays and day.isoformat() not in skip:
            yield day
        day += dt.timedelta(days=1)


def _received(sql, table: str, days, at: str) -> None:
    """A ledger as months of runs leave it: one publish per day given, at `at` UTC."""
    rows = [(f"{table}-{i}", table, f"ref.{table}", f"{day} {at}") for i, day in enumerate(days)]
    sql(
        "INSERT INTO etl_audit.load_ledger (run_id, table_name, target, content_hash, "
        "config_hash, load_mode, rows_loaded, rows_before, rows_after, loaded_at) VALUES "
        + ", ".join(["(?, ?, ?, 'h', 'c', 'truncate', 1, 1, 1, CAST(? AS TIMESTAMP))"] * len(rows)),
        *[value for row in rows for value in row],
    )


@pytest.fixture
def learned_fleet(table_dir, warehouse_url, sql, capsys):
    """Three tables that learn their freshness, with synthetic ledger histories: daily
    (one day missing), weekday-only (a Monday holiday), monthly (one file a day late);
    and one with too little history to learn from."""
    table_dir(MAPPING, "t_daily", freshness={"expect": "auto", "grace_hours": 6})
    table_dir(MAPPING, "t_weekday", freshness={"expect": "auto", "grace_hours": 4})
    table_dir(MAPPING, "t_monthly", freshness={"expect": "auto", "grace_hours": 24})
    root = table_dir(MAPPING, "t_new", freshness={"expect": "auto"}).parent
    sql("SELECT 1")  # the warehouse is there (DuckDB's file too), no run yet
    assert _learned_freshness(root, warehouse_url, capsys, "2026-11-01T00:00:00")[0] == 0
    _received(sql, "t_daily", _days("2026-10-31", "2026-11-29", skip=("2026-11-15",)), "06:00")
    weekdays = _days("2026-10-19", "2026-11-27", range(5), skip=("2026-11-09",))
    _received(sql, "t_weekday", weekdays, "07:00")
    months = [dt.date(2026, m, 2 if m == 7 else 1) for m in range(4, 12)]
    _received(sql, "t_monthly", months, "05:00")
    _received(sql, "t_new", _days("2026-11-26", "2026-11-28"), "09:00")
    return root


def _learned_freshness(root, warehouse_url, capsys, now: str, *extra: str):
    capsys.readouterr()
    code = main(
        [
            "freshness",
            "--config-root",
            str(root),
            "--warehouse",
            warehouse_url,
            "--now",
            now,
            *extra,
        ]
    )
    return code, capsys.readouterr().out


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_learned_freshness_for_daily_weekday_and_monthly_files(
    learned_fleet, warehouse_url, capsys, tmp_path, monkeypatch
):
    verdicts = {}
    for now in (
        "2026-11-20T12:00:00",  # mid-month: the monthly file is not due
        "2026-11-29T20:00:00",  # Sunday evening: no weekday file is due over the weekend
        "2026-11-30T09:00:00",  # Monday: the daily file is 3 h late, within its grace
        "2026-11-30T13:00:00",  # past the grace: warn
        "2026-11-30T19:00:00",  # past twice the grace: error
        "2026-12-02T06:00:00",  # the monthly file, due on the 1st, 25 h late (grace 24)
        "2026-12-03T06:00:00",  # ... and past twice its grace
    ):
        code, out = _learned_freshness(learned_fleet, warehouse_url, capsys, now, "--json")
        report = json.loads(out)
        verdicts[now[5:13]] = (code, {t["table"]: t["status"] for t in report["tables"]})
        if now.startswith("2026-11-30T13"):
            expect = {t["table"]: t["expect"] for t in report["tables"]}
    # A daily table past the grace at 09:00 would be late even on a Sunday if its
    # cadence were the median gap alone; a holiday does not make Mondays optional.
    assert verdicts == {
        "11-20T12": (0, _st("pass", "pass", "pass")),
        "11-29T20": (0, _st("pass", "pass", "pass")),
        "11-30T09": (0, _st("pass", "pass", "pass")),
        "11-30T13": (0, _st("warn", "warn", "pass")),
        "11-30T19": (1, _st("error", "error", "pass")),
        "12-02T06": (1, _st("error", "error", "warn")),
        "12-03T06": (1, _st("error", "error", "error")),
    }
    assert expect["t_daily"] == {
        "pattern": "daily around 06:00 UTC",
        "due": "2026-11-30T06:00:00Z",
        "late_hours": 7.0,
        "grace_hours": 6.0,
    }
    assert expect["t_weekday"]["pattern"] == "weekdays (Mon-Fri) around 07:00 UTC"
    assert expect["t_monthly"]["pattern"] == "monthly on day 1 around 05:00 UTC"
    assert expect["t_monthly"]["due"] == "2026-12-01T05:00:00Z"
    assert expect["t_new"] == {
        "pattern": None,
        "due": None,
        "late_hours": None,
        "grace_hours": 6.0,
    }

    # The scheduled step (what EventBridge sends) learns the same.
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(learned_fleet))
    monkeypatch.setenv("REFLOAD_WAREHOUSE_URL", warehouse_url)
    result = lambda_handler({"step": "freshness", "now": "2026-11-30T13:00:00Z"}, None)
    assert {t["table"]: t["status"] for t in result["tables"]} == _st("warn", "warn", "pass")
    assert result["tables"][0]["expect"]["grace_hours"] in (4.0, 6.0, 24.0)

    # The text output and the alert say what was expected and how late it is.
    for sent in (tmp_path / "outbox").glob("*"):
        sent.unlink()
    code, out = _learned_freshness(learned_fleet, warehouse_url, capsys, "2026-11-30T19:00:00")
    line = next(x for x in out.splitlines() if x.startswith("t_weekday"))
    assert (
        "ERROR" in line and "[expected weekdays (Mon-Fri) around 07:00 UTC, grace 4 hours]" in line
    )
    assert "due 2026-11-30 07:00 UTC, 12.0 h late" in line
    assert next(x for x in out.splitlines() if x.startswith("t_new")).split()[1] == "LEARNING"
    alert = json.loads(
        next(
            p for p in (tmp_path / "outbox").glob("*.alert.json") if "t_weekday" in p.name
        ).read_text()
    )
    assert (
        "a file weekdays (Mon-Fri) around 07:00 UTC; the one due 2026-11-30T07:00:00Z is "
        "12 hours late" in alert["text"]
    )

    # `status` shows what was learned, beside the freshness verdict.
    capsys.readouterr()
    assert main(["status", "--config-root", str(learned_fleet), "--warehouse", warehouse_url]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("t_monthly"))
    assert line.endswith("expected monthly on day 1 around 05:00 UTC")


def _st(daily: str, weekday: str, monthly: str) -> dict[str, str]:
    return {"t_daily": daily, "t_weekday": weekday, "t_monthly": monthly, "t_new": "learning"}


def test_a_grace_no_clock_holds_is_exit_2_not_a_crash(table_dir, warehouse_url, sql, capsys):
    root = table_dir(MAPPING, "t_daily", freshness={"expect": "auto"}).parent
    sql("SELECT 1")  # the warehouse is there (DuckDB's file too), no run yet
    assert _learned_freshness(root, warehouse_url, capsys, "2026-11-01T00:00:00")[0] == 0
    _received(sql, "t_daily", _days("2026-10-31", "2026-11-29"), "06:00")
    config = table_dir(MAPPING, "t_daily", freshness={"expect": "auto", "grace_hours": 1e12})

    capsys.readouterr()
    argv = ["--config-root", str(root), "--warehouse", warehouse_url]
    code = main(["freshness", *argv, "--now", "2026-12-01T00:00:00"])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "freshness.grace_hours: Input should be less than or equal to 8784" in out + err
    assert "OverflowError" not in out + err
    assert main(["check", str(root)]) == 2
    assert f"{config}: freshness.grace_hours" in capsys.readouterr().out
