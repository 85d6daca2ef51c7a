"""`python -m handler status`: lines, JSON, and the HTML page rendered in headless Chromium."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from handler.cli import main

MAPPING = """
source_column,target_column,data_type,nullable
code,code,varchar(8),false
label,label,string,true
"""
DAILY = {"error_after": {"count": 1, "period": "day"}}


def _csv(rows: int, bad_label: bool = False) -> str:
    lines = ["code,label"] + [f"C{i:03d},label {i}" for i in range(rows)]
    if bad_label:
        lines.append("C999,NOT ALLOWED")
    return "\n".join(lines) + "\n"


@pytest.fixture
def fleet(table_dir, write, run_cli, sql) -> Path:
    """Four tables: one failing, one stale, one never run, one fine (3 runs each way)."""
    checks = [{"type": "regex", "column": "label", "pattern": "^label"}]
    ok = table_dir(MAPPING, name="t_ok", freshness=DAILY, quality_tests=checks)
    failing = table_dir(MAPPING, name="t_failing", quality_tests=checks)
    stale = table_dir(MAPPING, name="t_stale", freshness=DAILY, quality_tests=checks)
    table_dir(MAPPING, name="t_new", freshness=DAILY)
    for rows in (3, 5, 4):
        assert run_cli(ok, write(f"ok{rows}.csv", _csv(rows)))[0] == 0
    assert run_cli(failing, write("f1.csv", _csv(2)))[0] == 0
    assert run_cli(failing, write("f2.csv", _csv(2, bad_label=True)))[0] == 1
    assert run_cli(stale, write("s1.csv", _csv(6)))[0] == 0
    sql(
        "UPDATE etl_audit.load_ledger SET loaded_at = loaded_at - INTERVAL '3 days' "
        "WHERE table_name = 't_stale'"
    )
    return ok.parent


def _status(fleet: Path, warehouse_url: str, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["status", "--config-root", str(fleet), "--warehouse", warehouse_url, *extra])
    return code, capsys.readouterr().out


@pytest.mark.all_warehouses
def test_json_has_each_table_failures_and_stale_first(fleet, warehouse_url, capsys):
    code, out = _status(fleet, warehouse_url, capsys, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["status"] == "failing"
    by_table = {t["table"]: t for t in report["tables"]}
    assert [t["table"] for t in report["tables"]] == ["t_failing", "t_stale", "t_new", "t_ok"]
    failing = by_table["t_failing"]
    assert (
        failing["status"],
        failing["rows"],
        failing["tests_passed"],
        failing["tests_failed"],
    ) == (
        "failed",
        3,
        0,
        1,
    )
    assert [r["status"] for r in failing["history"]] == ["passed", "failed"]
    assert (by_table["t_stale"]["freshness"], by_table["t_stale"]["status"]) == ("error", "passed")
    assert by_table["t_new"] | {"history": None} == {
        "table": "t_new",
        "status": "never_run",
        "run_id": None,
        "when": None,
        "rows": None,
        "changes": None,
        "tests_passed": None,
        "tests_failed": None,
        "tests_warned": None,
        "attempts": None,
        "freshness": "never_loaded",
        "age_hours": None,
        "attention": "unknown",
        "cost_usd_30d": 0.0,
        "history": None,
        "owner": None,
    }
    ok = by_table["t_ok"]
    assert [r["rows"] for r in ok["history"]] == [3, 5, 4]
    assert (ok["rows"], ok["tests_passed"], ok["freshness"]) == (4, 1, "pass")


def test_text_is_one_line_per_configured_table(fleet, warehouse_url, capsys):
    code, out = _status(fleet, warehouse_url, capsys)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4
    assert lines[0].startswith("t_failing          FAILED    20")
    assert "rows         3  tests 0/1 passed  freshness -" in lines[0]
    assert lines[1].startswith("t_stale            PASSED")
    assert "freshness error" in lines[1]
    assert lines[2].startswith("t_new              NEVER_RUN -")
    assert "rows         4  tests 1/1 passed  freshness pass" in lines[3]


# --- the page, in a real browser ------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> Callable[..., subprocess.CompletedProcess[str]]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("headless Chromium is missing: run scripts/install_chromium.sh")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # --no-sandbox: the suite runs as root (PostgreSQL setup); the page is our own file.
        return subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    return run


class _Dom(HTMLParser):
    """The rendered DOM Chromium dumps: rows, their SVG charts and what the script wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.rows: list[dict[str, Any]] = []
        self.headers: list[dict[str, str | None]] = []  # the block and owner rows
        self.summary = ""
        self._in_summary = False
        self._svg: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "tr" and "data-table" in a:
            self.rows.append({**a, "charts": {}})
        elif tag == "tr" and a.get("class") in ("block-row", "owner-row"):
            self.headers.append(a)
        elif tag == "td" and "last-change" in (a.get("class") or "") and self.rows:
            self.rows[-1]["last_change"] = a
        elif tag == "svg" and self.rows:
            kind = next(c for c in (a["class"] or "").split() if c.endswith("-chart"))
            self._svg = {**a, "circles": 0, "runs": 0}
            self.rows[-1]["charts"][kind] = self._svg
        elif tag == "circle" and self._svg is not None:
            self._svg["circles"] += 1
        elif tag == "g" and self._svg is not None and "run" in (a.get("class") or ""):
            self._svg["runs"] += 1
        self._in_summary = a.get("id") == "summary"

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg = None

    def handle_data(self, data: str) -> None:
        if self._in_summary:
            self.summary += data
            self._in_summary = False


def test_page_renders_in_chromium_with_a_chart_per_table(
    fleet, warehouse_url, capsys, chromium, tmp_path, table_dir
):
    page = tmp_path / "site" / "status.html"
    code, out = _status(fleet, warehouse_url, capsys, "--html", str(page))
    assert code == 0 and out.endswith(f"wrote {page}\n")
    source = page.read_text()
    # Self-contained: nothing fetched from anywhere (works from a file or an S3 link).
    assert "src=" not in source and "href=" not in source and "@import" not in source

    dom = _Dom()
    dom.feed(chromium("--dump-dom", page.as_uri()).stdout)
    assert dom.body.get("data-rendered") == "yes"  # the page's script ran in the browser
    assert dom.summary == "4 tables: 1 failing, 1 stale, 0 late, 1 ok"
    assert [(r["data-table"], r["data-attention"]) for r in dom.rows] == [
        ("t_failing", "failing"),
        ("t_stale", "stale"),
        ("t_new", "unknown"),
        ("t_ok", "ok"),
    ]
    charts = {r["data-table"]: r["charts"] for r in dom.rows}
    # One dot per publish, one bar group per run; laid out at full width by the browser.
    assert {
        t: (c["rows-chart"]["circles"], c["tests-chart"]["runs"]) for t, c in charts.items()
    } == {
        "t_failing": (2, 2),
        "t_stale": (1, 1),
        "t_new": (0, 0),
        "t_ok": (3, 3),
    }
    for table, chart in charts.items():
        for svg in chart.values():
            assert svg["data-points"] == str(svg["circles"] or svg["runs"]), table
            assert svg["data-rendered-width"] == "180", table

    # The "last change" panel: each table's last publish against the one before (`diff`).
    assert {
        r["data-table"]: tuple(
            r["last_change"].get(f"data-{k}") for k in ("state", "added", "removed")
        )
        for r in dom.rows
    } == {
        "t_failing": ("diff", "1", "0"),
        "t_stale": ("none", None, None),
        "t_new": ("none", None, None),
        "t_ok": ("diff", "0", "1"),
    }

    shot = tmp_path / "status.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,400", page.as_uri())
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1280, 400)

    # 150 tables: the ones that need a look in a block of their own at the top, grouped by
    # owner ("no owner" here), the counts per status above them, and a filter box.
    geo = {"name": "geo-data", "emails": ["geo@example.com"]}
    finance = {"name": "finance", "emails": ["fin@example.com"]}
    for name, owner in {"t_failing": geo, "t_stale": finance, "t_ok": geo}.items():
        config = json.loads((fleet / f"{name}.json").read_text())
        (fleet / f"{name}.json").write_text(json.dumps({**config, "owner": owner}))
    for i in range(146):
        table_dir(MAPPING, name=f"t_bulk_{i:03d}", owner=finance if i % 2 else geo)
    code, _ = _status(fleet, warehouse_url, capsys, "--html", str(page))
    assert code == 0
    dom = _Dom()
    dom.feed(chromium("--dump-dom", page.as_uri()).stdout)
    assert dom.summary == "150 tables: 1 failing, 1 stale, 0 late, 1 ok"
    assert dom.body.get("data-shown") == "150"
    order = [r["data-table"] for r in dom.rows]
    assert order[:2] == ["t_failing", "t_stale"] and order[-1] == "t_new"
    # The worst table's owner leads each block; each owner's tables together.
    assert [(h["class"], h.get("data-owner"), h.get("data-block")) for h in dom.headers] == [
        ("block-row", None, "attention"),
        ("owner-row", "geo-data", "attention"),
        ("owner-row", "finance", "attention"),
        ("block-row", None, "rest"),
        ("owner-row", "geo-data", "rest"),  # t_bulk_000's, the first never-run table
        ("owner-row", "finance", "rest"),
        ("owner-row", "no owner", "rest"),  # t_new
    ]
    owners = [r["data-owner"] for r in dom.rows[2:]]
    assert owners == sorted(owners, key=["geo-data", "finance", "no owner"].index)
    assert "geo@example.com" in page.read_text()
    source = page.read_text()
    for kind, count in {"failing": 1, "stale": 1, "late": 0, "unknown": 147, "ok": 1}.items():
        assert f'data-filter="{kind}" class="count-{kind}">{kind}<b>{count}</b>' in source
    assert "last runs: 1 failed, 147 never run, 2 passed" in source
    assert 'id="filter" type="search"' in source and "href=" not in source
    assert 'id="table-t_stale"' in source  # where the digest links

    # The filter, as a link shares it: every word must match the table, owner or status;
    # the rest of the rows are hidden, and the headers of groups left empty.
    dom = _Dom()
    dom.feed(chromium("--dump-dom", page.as_uri() + "#filter=bulk_00%20never").stdout)
    assert sorted(r["data-table"] for r in dom.rows if "hidden" not in r) == [
        f"t_bulk_{i:03d}" for i in range(10)
    ]
    assert dom.body.get("data-shown") == "10"
    assert [h.get("data-block") for h in dom.headers if "hidden" not in h] == ["rest"] * 3
    dom = _Dom()
    dom.feed(chromium("--dump-dom", page.as_uri() + "#filter=finance").stdout)
    assert dom.body.get("data-shown") == "74"  # t_stale and 73 never-run tables
    assert [h.get("data-owner") for h in dom.headers if "hidden" not in h] == [
        None,
        "finance",
        None,
        "finance",
    ]
    dom = _Dom()
    dom.feed(chromium("--dump-dom", page.as_uri() + "#filter=failing").stdout)
    assert [r["data-table"] for r in dom.rows if "hidden" not in r] == ["t_failing"]


def test_an_unwritable_page_is_exit_2_naming_the_file(fleet, warehouse_url, capsys, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    page = blocker / "status.html"
    code = main(
        ["status", "--config-root", str(fleet), "--warehouse", warehouse_url, "--html", str(page)]
    )
    assert code == 2
    assert f"{blocker / 'status.html'}: cannot write the page" in capsys.readouterr().err


def test_the_page_can_be_published_to_s3_as_html(fleet, warehouse_url, capsys, s3):
    code, out = _status(fleet, warehouse_url, capsys, "--html", "s3://curated/site/status.html")
    assert code == 0 and out.endswith("wrote s3://curated/site/status.html\n")
    page = s3.get_object(Bucket="curated", Key="site/status.html")
    assert page["ContentType"] == "text/html; charset=utf-8"
    assert b'data-table="t_failing"' in page["Body"].read()


def test_a_broken_config_is_a_row_and_the_page_is_still_written(
    fleet, table_dir, warehouse_url, capsys, tmp_path
):
    broken = table_dir(MAPPING, name="t_broken", table_name="T Broken")
    page = tmp_path / "status.html"
    message = f"{broken}: table_name: identifier 'T Broken' must be lower-case letters"

    code, out = _status(fleet, warehouse_url, capsys, "--json", "--html", str(page))

    assert code == 0
    report = json.loads(out)
    assert report["status"] == "failing"
    [row] = [t for t in report["tables"] if t["status"] == "invalid_config"]
    assert (row["table"], row["config"], row["attention"]) == ("T Broken", str(broken), "failing")
    assert row["error"]["message"].startswith(message)
    # Every valid table is still reported.
    assert {t["table"] for t in report["tables"]} == {
        "T Broken",
        "t_failing",
        "t_stale",
        "t_new",
        "t_ok",
    }
    source = page.read_text()
    assert 'data-table="T Broken" data-status="invalid_config"' in source
    assert "must be lower-case letters" in source

    code, out = _status(fleet, warehouse_url, capsys)
    assert code == 0
    assert f"T Broken           INVALID_CONFIG  {message}" in out
    assert len(out.splitlines()) == 5


# --- a run's status is its last attempt (#30.3) ---------------------------------------------


@pytest.mark.all_warehouses
def test_a_run_whose_rerun_passed_is_passed_on_replay_everywhere(
    table_dir, write, run_cli, warehouse_url, capsys, tmp_path
):
    strict = [
        {"type": "regex", "column": "label", "pattern": "^label"},
        {"type": "not_null", "columns": ["code"]},
    ]
    config = table_dir(MAPPING, name="t_vendor", quality_tests=strict)
    code, failed = run_cli(config, write("v.csv", _csv(3, bad_label=True)))
    assert code == 1
    [rerun] = (tmp_path / "outbox").glob("*.rerun.json")
    # The owner agrees the new label is fine, relaxes the test and replays the alert's input.
    loose = [{**strict[0], "pattern": "^(label|NOT)"}, strict[1]]
    table_dir(MAPPING, name="t_vendor", quality_tests=loose)
    assert main(["replay", str(rerun), "--warehouse", warehouse_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == failed["run_id"]
    assert list((tmp_path / "outbox").glob("*.recovered.json"))

    _, out = _status(config.parent, warehouse_url, capsys, "--json")
    [table] = json.loads(out)["tables"]
    assert (table["status"], table["attempts"], table["attention"]) == ("passed", 2, "ok")
    # Tests of the last attempt only: not 3 of 4 (the failed attempt's two plus these two).
    assert (table["tests_passed"], table["tests_failed"], table["tests_warned"]) == (2, 0, 0)
    _, out = _status(config.parent, warehouse_url, capsys)
    assert out.startswith("t_vendor           PASSED on replay 20")
    assert "tests 2/2 passed" in out
    page = tmp_path / "status.html"
    _status(config.parent, warehouse_url, capsys, "--html", str(page))
    html = page.read_text()
    assert (
        'data-status="passed"' in html
        and "on replay" in html
        and 'data-status="failed"' not in html
    )

    assert main(["history", "t_vendor", "--warehouse", warehouse_url, "--json"]) == 0
    [run] = json.loads(capsys.readouterr().out)
    assert (run["status"], run["attempts"]) == ("passed", 2)
    assert [(s["step"], s["status"], s["attempt"]) for s in run["steps"]] == [
        ("ingest", "ok", 1),
        ("load", "ok", 1),
        ("validate", "failed", 1),
        ("validate", "passed", 2),
    ]
    assert {c["status"] for c in run["checks"]} == {"pass"} and len(run["checks"]) == 2
    assert main(["history", "t_vendor", "--warehouse", warehouse_url]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "PASSED on replay run " in line
    assert "ingest ok · load ok · validate failed | replay: validate passed" in line


def test_a_rejected_run_is_rejected_with_no_tests(table_dir, write, run_cli, warehouse_url, capsys):
    config = table_dir(MAPPING, name="t_vendor", quality_tests=[{"type": "row_count_match"}])
    assert run_cli(config, write("v.csv", "code,label\n,no code\n"))[0] == 2

    _, out = _status(config.parent, warehouse_url, capsys)
    assert out.startswith("t_vendor           REJECTED  20")
    assert "tests -" in out and "tests 0/0" not in out
    _, out = _status(config.parent, warehouse_url, capsys, "--json")
    [table] = json.loads(out)["tables"]
    assert (table["status"], table["tests_passed"], table["attempts"]) == ("rejected", None, 1)
    assert main(["history", "t_vendor", "--warehouse", warehouse_url]) == 0
    assert capsys.readouterr().out.split()[2] == "REJECTED"


class _Labels(_Dom):
    """The rendered DOM, with the text each chart writes (its max and min)."""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        super().handle_starttag(tag, attrs)
        if tag == "svg" and self._svg is not None:
            self._svg["texts"] = []

    def handle_data(self, data: str) -> None:
        super().handle_data(data)
        if self._svg is not None and data.strip():
            self._svg["texts"].append(data.strip())


def test_the_rows_sparkline_starts_at_zero_so_one_row_is_not_a_zigzag(
    table_dir, write, run_cli, warehouse_url, capsys, chromium, tmp_path
):
    steady = table_dir(MAPPING, name="t_steady")
    for rows in (1200, 1201, 1200):  # one row more, then one less
        assert run_cli(steady, write(f"s{rows}.csv", _csv(rows)))[0] == 0
    grown = table_dir(MAPPING, name="t_grown")
    for rows in (1, 40):
        assert run_cli(grown, write(f"g{rows}.csv", _csv(rows)))[0] == 0
    page = tmp_path / "status.html"
    assert _status(steady.parent, warehouse_url, capsys, "--html", str(page))[0] == 0

    dom = _Labels()
    dom.feed(chromium("--dump-dom", page.as_uri()).stdout)
    charts = {r["data-table"]: r["charts"]["rows-chart"] for r in dom.rows}
    # Drawn by the browser: a change of one row in 1,200 is under a pixel high; a table
    # that grew from 1 to 40 rows spans the chart (32 px between its paddings).
    assert int(charts["t_steady"]["data-line-height"]) <= 1
    assert int(charts["t_grown"]["data-line-height"]) >= 30
    assert {"0", "max 1,201", "min 1,200"} <= set(charts["t_steady"]["texts"])
    assert {"0", "max 40", "min 1"} <= set(charts["t_grown"]["texts"])
