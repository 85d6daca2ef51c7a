"""`python -m handler status`: one line per configured table, or one self-contained HTML page.

The page has no external assets (inline CSS, inline SVG, one inline script), so it works
opened from a file or from an S3 link. Tables that need someone come first: failing runs,
then stale ones, then never-run ones, then the rest.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steps.freshness import BrokenConfig

RUNS_PER_TABLE = 30
FAILING = ("failed", "rejected", "error")
# The status of a row whose config does not validate (its `error` says why).
INVALID_CONFIG = "invalid_config"
# Sort order of the fleet table (and the `status` value of the whole fleet).
_ATTENTION = ("failing", "stale", "late", "unknown", "ok")


def attention(status: str | None, freshness: str | None) -> str:
    if status in FAILING:
        return "failing"
    if freshness == "error":
        return "stale"
    if freshness == "warn":
        return "late"
    if status in (None, "running") or freshness == "never_loaded":
        return "unknown"
    return "ok"


def fleet_status(
    config_root: str, warehouse_url: str | None, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Each configured table's last run, rows, tests, freshness and recent history."""
    from handler.cli.commands.group_status import group_rows
    from handler.cli.commands.history import fleet_history
    from steps.freshness import (
        assess,
        iso,
        last_received,
        parse_now,
        received_times,
        table_configs,
    )
    from steps.shared.warehouse import open_warehouse
    from steps.shared.warehouse.audit_window import cost_by_table

    now = now or parse_now(None)
    configs, broken = table_configs(config_root)
    with open_warehouse(warehouse_url, must_exist=True) as warehouse:
        warehouse.ensure_audit_tables()
        history = fleet_history(warehouse, RUNS_PER_TABLE)
        received = last_received(warehouse)
        costs = cost_by_table(warehouse, now - dt.timedelta(days=30))
        arrived = received_times(warehouse, configs)  # no query unless one has expect: auto
        groups = group_rows(config_root, warehouse)
    tables = []
    for uri, config in configs:
        runs = history.get(config.table_name, [])
        last = runs[-1] if runs else None
        name = config.table_name
        fresh = (
            assess(uri, config, received.get(name), now, arrived.get(name))
            if config.freshness
            else None
        )
        rows = next((r["rows"] for r in reversed(runs) if r["rows"] is not None), None)
        status = last["status"] if last else "never_run"
        tables.append(
            {
                "table": config.table_name,
                "status": status,
                "run_id": last["run_id"] if last else None,
                "when": iso(last["finished"]) if last else None,
                "rows": rows,
                # Keys the last run's publish added, removed and changed (keyed tables).
                "changes": last.get("changes") if last else None,
                # The last attempt's tests; None when none ran (a rejected file, a stale one).
                **{
                    name: last[name] if last and last["tests_ran"] else None
                    for name in ("tests_passed", "tests_failed", "tests_warned")
                },
                # More than one: the run was replayed (its alert's rerun.json, a retry), and
                # its status is the last attempt's.
                "attempts": last["attempts"] if last else None,
                "freshness": fresh.status if fresh else None,
                "age_hours": fresh.age_hours if fresh else None,
                "attention": attention(status if last else None, fresh.status if fresh else None),
                # What its runs of the last 30 days cost on AWS (steps.shared.cost).
                "cost_usd_30d": costs.get(config.table_name, 0.0),
                "history": [{**r, "finished": iso(r["finished"])} for r in runs],
                # `expect: auto`: the learned arrival pattern and the file due next.
                **(
                    {"freshness_expected": fresh.expectation()}
                    if fresh and config.freshness and config.freshness.expect
                    else {}
                ),
                # Who gets its alerts (`owner`, with `alert_emails` as its emails).
                "owner": owner.model_dump() if (owner := config.table_owner) else None,
            }
        )
    # A config that does not validate is a row too: no run of it can succeed until fixed.
    tables += [_broken_row(b) for b in broken]
    tables.sort(key=lambda t: (_ATTENTION.index(t["attention"]), t["table"]))
    worst = tables[0]["attention"] if tables else "ok"
    return {"status": worst, "generated_at": iso(now), "tables": tables, "groups": groups}


def _broken_row(broken: BrokenConfig) -> dict[str, Any]:
    empty = ("run_id", "when", "rows", "changes", "tests_passed", "tests_failed", "attempts")
    return {
        "table": broken.table,
        "status": INVALID_CONFIG,
        **dict.fromkeys(empty),
        "tests_warned": None,
        "freshness": None,
        "age_hours": None,
        "attention": "failing",
        "owner": None,
        "cost_usd_30d": None,
        "history": [],
        "config": broken.config_uri,
        "error": {"type": broken.error_type, "message": broken.message},
    }


def _total(run: dict[str, Any]) -> int:
    return int(run["tests_passed"] + run["tests_failed"] + run["tests_warned"])


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


def replayed(table: dict[str, Any]) -> str:
    """' on replay' for a last run that took more than one attempt."""
    return " on replay" if (table.get("attempts") or 0) > 1 else ""


def print_status(fleet: dict[str, Any]) -> None:
    if not fleet["tables"]:
        print("no table configs found")
    width = max([9, *(len(t["status"] + replayed(t)) for t in fleet["tables"])])
    for t in fleet["tables"]:
        if t["status"] == INVALID_CONFIG:
            print(f"{t['table']:<18} {INVALID_CONFIG.upper()}  {t['error']['message']}")
            continue
        tests = (
            "tests -"
            if t["tests_passed"] is None
            else f"tests {t['tests_passed']}/{_total(t)} passed"
        )
        when = (t["when"] or "-").replace("T", " ").removesuffix("Z")
        print(
            f"{t['table']:<18} {t['status'].upper() + replayed(t):<{width}} {when:<19}  "
            f"rows {_n(t['rows']):>9}  "
            f"{tests:<17} freshness {t['freshness'] or '-':<12} run {t['run_id'] or '-'}"
            + (
                f"  expected {t['freshness_expected']['pattern'] or 'still learning'}"
                if t.get("freshness_expected")
                else ""
            )
            + (
                "  keys " + ", ".join(f"{k} {v:,}" for k, v in t["changes"].items())
                if t.get("changes")
                else ""
            )
            + (f"  owner {t['owner']['name']}" if (t.get("owner") or {}).get("name") else "")
        )
    from handler.cli.commands.group_status import print_groups

    print_groups(fleet.get("groups") or [])


# --- the page -------------------------------------------------------------------------

CHART_WIDTH, CHART_HEIGHT, PAD, BAR_WIDTH = 180, 40, 4, 12
LABEL_WIDTH = 66  # the rows chart's right side: its max and min, as numbers
COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "warn": "#ef6c00"}
CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #1d1d1f; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; }
.meta { color: #666; margin-bottom: 16px; }
table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 3px #0002; }
th, td { padding: 6px 10px; border-bottom: 1px solid #eee; text-align: left;
         vertical-align: middle; white-space: nowrap; }
th { background: #f0f0f3; font-weight: 600; font-size: 12px; text-transform: uppercase;
     letter-spacing: .03em; color: #555; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
         font-weight: 600; color: #fff; background: #888; }
.s-passed, .f-pass { background: #2e7d32; }
.s-failed, .s-rejected, .s-error, .s-invalid_config, .f-error { background: #c62828; }
.s-running, .f-warn { background: #ef6c00; }
.s-never_run, .f-never_loaded { background: #9e9e9e; }
tr.a-failing td:first-child { border-left: 4px solid #c62828; }
tr.a-stale td:first-child { border-left: 4px solid #ad1457; }
tr.a-late td:first-child { border-left: 4px solid #ef6c00; }
tr.a-unknown td:first-child, tr.a-ok td:first-child { border-left: 4px solid transparent; }
svg text { font-size: 10px; fill: #999; }
code { font-size: 12px; color: #555; }
"""
# Counts the rows by what they need and writes the summary: the page reads the same
# whether a browser or a test renders it (tests check the summary the browser wrote).
SCRIPT = """
const rows = [...document.querySelectorAll("tbody tr[data-table]")];
const count = a => rows.filter(r => r.dataset.attention === a).length;
document.getElementById("summary").textContent =
  `${rows.length} tables: ${count("failing")} failing, ${count("stale")} stale, ` +
  `${count("late")} late, ${count("ok")} ok`;
for (const svg of document.querySelectorAll("svg.chart")) {
  svg.dataset.renderedWidth = Math.round(svg.getBoundingClientRect().width);
  const line = svg.querySelector("polyline");
  if (line) svg.dataset.lineHeight = Math.round(line.getBoundingClientRect().height);
}
document.body.dataset.rendered = "yes";
"""


def _svg(kind: str, points: int, body: str, label: str) -> str:
    return (
        f'<svg class="chart {kind}" data-points="{points}" width="{CHART_WIDTH}" '
        f'height="{CHART_HEIGHT}" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" '
        f'aria-label="{html.escape(label)}">{body}</svg>'
    )


def rows_chart(history: list[dict[str, Any]]) -> str:
    """Rows in the target after each publish: a line with one dot per publish, from zero
    (the bottom) to the most rows (the top), with the max and min written beside it. From
    zero, not from the min: 1,000 then 999 rows is a flat line, not a full-height zigzag."""
    points = [(r["finished"], r["rows"]) for r in history if r["rows"] is not None]
    if not points:
        return _svg("rows-chart", 0, f'<text x="{PAD}" y="24">no publish yet</text>', "no data")
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    right = CHART_WIDTH - PAD - LABEL_WIDTH
    step = (right - PAD) / max(len(points) - 1, 1)
    bottom = CHART_HEIGHT - PAD

    def y(rows: int) -> float:
        return bottom - (rows / high if high else 0) * (CHART_HEIGHT - 2 * PAD)

    xy = [(PAD + i * step, y(rows)) for i, (_, rows) in enumerate(points)]
    labels = "".join(
        f'<text class="{kind}" x="{CHART_WIDTH - PAD}" y="{top}" text-anchor="end">'
        f"{kind} {value:,}</text>"
        for kind, value, top in (("max", high, 11), ("min", low, 23))
    )
    zero = (
        f'<line x1="{PAD}" y1="{bottom}" x2="{right:.1f}" y2="{bottom}" stroke="#ddd"/>'
        f'<text class="zero" x="{CHART_WIDTH - PAD}" y="{bottom}" text-anchor="end">0</text>'
    )
    line = " ".join(f"{x:.1f},{yy:.1f}" for x, yy in xy)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{yy:.1f}" r="2.5" fill="#1565c0">'
        f"<title>{html.escape(str(when))}: {rows:,} rows</title></circle>"
        for (x, yy), (when, rows) in zip(xy, points, strict=True)
    )
    body = (
        f'{zero}<polyline points="{line}" fill="none" stroke="#1565c0" stroke-width="1.5"/>'
        f"{dots}{labels}"
    )
    return _svg("rows-chart", len(points), body, f"rows: {low:,} to {high:,}")


def tests_chart(history: list[dict[str, Any]]) -> str:
    """One stacked bar per run: tests passed (green), warned (orange), failed (red)."""
    if not history:
        return _svg("tests-chart", 0, f'<text x="{PAD}" y="24">no runs yet</text>', "no data")
    most = max(max(_total(r) for r in history), 1)
    width = min(BAR_WIDTH, (CHART_WIDTH - 2 * PAD) / len(history))
    scale = (CHART_HEIGHT - 2 * PAD) / most
    bars = []
    for i, run in enumerate(history):
        x, top = PAD + i * width, CHART_HEIGHT - PAD
        parts = [
            ("passed", run["tests_passed"] * scale),
            ("warn", run["tests_warned"] * scale),
            # A run that failed before its tests ran still shows a red stub.
            (
                "failed",
                3.0
                if run["status"] in FAILING and not run["tests_failed"]
                else run["tests_failed"] * scale,
            ),
        ]
        rects = ""
        for colour, height in parts:
            top -= height
            rects += (
                f'<rect x="{x:.1f}" y="{top:.1f}" width="{max(width - 2, 1):.1f}" '
                f'height="{height:.1f}" fill="{COLOURS[colour]}"/>'
            )
        tip = (
            f"{run['finished']} {run['status']}: {run['tests_passed']} passed, "
            f"{run['tests_warned']} warned, {run['tests_failed']} failed"
        )
        bars.append(
            f'<g class="run run-{html.escape(run["status"])}"><title>{html.escape(tip)}</title>'
            f"{rects}</g>"
        )
    return _svg("tests-chart", len(history), "".join(bars), f"{len(history)} runs")


def _badge(prefix: str, value: str | None) -> str:
    if value is None:
        return "-"
    text = html.escape(value.replace("_", " "))
    return f'<span class="badge {prefix}-{html.escape(value)}">{text}</span>'


def render_html(fleet: dict[str, Any]) -> str:
    from handler.cli.commands import status_page as page
    from handler.cli.commands.group_status import groups_html

    e = html.escape
    columns = 8 + any("last_change" in t for t in fleet["tables"])
    rows = []
    block = None
    groups = page.grouped(fleet["tables"])
    for index, (group_block, owner, members) in enumerate(groups):
        if group_block != block:
            block = group_block
            count = sum(len(m) for b, _, m in groups if b == block)
            rows.append(page.block_header(block, count, columns))
        rows.append(page.group_header(block, owner, index, members, columns))
        rows += [_row(t, block, owner, index) for t in members]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>refload fleet status</title><style>{CSS}{page.CSS}</style></head><body>"
        "<h1>refload fleet status</h1>"
        f'<div class="meta">generated {e(str(fleet["generated_at"]))} · '
        f'<span id="summary">{len(fleet["tables"])} tables</span> · tests per run: '
        f'<b style="color:{COLOURS["passed"]}">passed</b>, '
        f'<b style="color:{COLOURS["warn"]}">warned</b>, '
        f'<b style="color:{COLOURS["failed"]}">failed</b></div>'
        f"{page.counts_bar(fleet['tables'], _ATTENTION)}"
        "<table><thead><tr><th>table</th><th>last run</th><th>when (UTC)</th><th>rows</th>"
        "<th>tests passed</th><th>freshness</th>"
        "<th>rows after each publish</th><th>tests per run</th>"
        + ("<th>last change</th>" if columns > 8 else "")
        + f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"{groups_html(fleet.get('groups') or [])}"
        f"<script>{SCRIPT}{page.SCRIPT}</script></body></html>"
    )


def _row(t: dict[str, Any], block: str, owner: str, group: int) -> str:
    from handler.cli.commands.last_change import panel_html

    e = html.escape
    tests = "-" if t["tests_passed"] is None else f"{t['tests_passed']}/{_total(t)}"
    age = "" if t["age_hours"] is None else f" <code>{t['age_hours']:,.1f} h</code>"
    when = e((t["when"] or "-").replace("T", " ").removesuffix("Z"))
    error = f"<br><code>{e(t['error']['message'])}</code>" if t.get("error") else ""
    return (
        f'<tr class="a-{t["attention"]}" id="table-{e(t["table"])}" data-table="{e(t["table"])}" '
        f'data-status="{e(t["status"])}" data-attention="{t["attention"]}" '
        f'data-owner="{e(owner)}" data-block="{block}" data-group="{group}">'
        f"<td><b>{e(t['table'])}</b>{error}</td><td>{_badge('s', t['status'])}"
        f"{e(replayed(t))}</td>"
        f"<td>{when}<br><code>{e(t['run_id'] or '')}</code></td>"
        f'<td class="num">{_n(t["rows"])}</td><td class="num">{tests}</td>'
        f"<td>{_badge('f', t['freshness'])}{age}</td>"
        f"<td>{rows_chart(t['history'])}</td><td>{tests_chart(t['history'])}</td>"
        # The "last change" panel, when the page was asked with it (fleet.status).
        + (panel_html(t["table"], t.get("last_change")) if "last_change" in t else "")
        + "</tr>"
    )
