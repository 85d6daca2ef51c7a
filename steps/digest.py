"""digest: ONE email for the fleet over a window (`{"step": "digest"}`, daily by schedule).

Every table that failed, warned, went stale (or late) or changed more than its usual share
in the window, with its runs and failures, what the window's runs cost, and a link to its
history. Sent through the alert channels but ServiceNow (a digest is not an incident),
every day even when nothing happened: "150 tables, all fine" is news on call too.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import statistics
from typing import Any

import structlog

from steps.freshness import assess, iso, last_received, parse_now, table_configs
from steps.shared.alerts.channels import CHANNELS, channels_from_env
from steps.shared.errors import MESSAGE_BYTES, ConfigError, truncate_bytes
from steps.shared.io.secrets import redact
from steps.shared.warehouse import open_warehouse
from steps.shared.warehouse.audit_window import run_costs, window_steps, window_tests

log = structlog.get_logger("refload.digest")

DEFAULT_HOURS = 24
# A publish is unusually large when it touched more than this share of the table's rows
# AND more than USUAL_FACTOR times its median share over the publishes before it.
LARGE_CHANGE_PCT = 10.0
USUAL_FACTOR = 3.0
USUAL_PUBLISHES = 30
# Listed worst first; `ok` tables are only counted.
ORDER = ("failed", "invalid_config", "stale", "late", "warned", "changed", "recovered", "ok")
FAILING = ("failed", "rejected", "error")
PASSING_TESTS = ("pass", "learning")
SKIPPED_CHANNELS = ("servicenow",)  # a digest opens no incident
LAST_ERROR_CHARS = 300


def run(payload: dict[str, Any]) -> dict[str, Any]:
    now = parse_now(payload.get("now"))
    found = fleet_digest(
        payload.get("config_root") or os.environ.get("REFLOAD_CONFIG_ROOT", "configs"),
        payload.get("warehouse"),
        float(payload.get("since") or DEFAULT_HOURS),
        now,
    )
    report = digest_report(found, payload["run_id"])
    found["sent"] = send_digest(report, {"outbox": payload.get("outbox")})
    return found


def fleet_digest(
    config_root: str, warehouse_url: str | None, hours: float, now: dt.datetime
) -> dict[str, Any]:
    """What happened to every configured table in the `hours` before `now`."""
    try:
        since = now - dt.timedelta(hours=hours)
    except OverflowError:
        raise ConfigError(
            f"--since {hours:g} hours before --now {now.isoformat()} is before year 1"
        ) from None
    configs, broken = table_configs(config_root)
    with open_warehouse(warehouse_url, must_exist=True) as warehouse:
        warehouse.ensure_audit_tables()
        steps = window_steps(warehouse, since, now)
        tests = window_tests(warehouse, since, now)
        costs = run_costs(warehouse, since, until=now)
        received = last_received(warehouse)
        publishes = warehouse.fleet_publishes(USUAL_PUBLISHES)
    runs = _runs(steps)
    warned = _warned(tests)
    changed = _large_changes(publishes, since, now)
    tables = []
    for uri, config in configs:
        name = config.table_name
        table_runs = runs.get(name, [])
        fresh = assess(uri, config, received.get(name), now).status if config.freshness else None
        failures = [r for r in table_runs if r["status"] in FAILING]
        status = _status(table_runs, failures, fresh, warned.get(name), changed.get(name))
        last = failures[-1] if failures else None
        tables.append(
            {
                "table": name,
                "status": status,
                "runs": len(table_runs),
                "failures": len(failures),
                "last_error": last["error"] if last else None,
                "warnings": warned.get(name, 0),
                "freshness": fresh,
                "change_pct": changed.get(name),
                "cost_usd": round(
                    sum(c["cost"]["usd"] for (t, _), c in costs.items() if t == name), 8
                ),
                **history_links(name),
            }
        )
    tables += [
        {
            "table": b.table,
            "status": "invalid_config",
            "runs": 0,
            "failures": 0,
            "last_error": f"{b.error_type}: {b.message}"[:LAST_ERROR_CHARS],
            "config": b.config_uri,
            **history_links(b.table),
        }
        for b in broken
    ]
    tables.sort(key=lambda t: (ORDER.index(t["status"]), t["table"]))
    counts = {s: sum(t["status"] == s for t in tables) for s in ORDER}
    return {
        "since": iso(since),
        "until": iso(now),
        "hours": hours,
        "counts": {s: n for s, n in counts.items() if n or s == "ok"},
        "runs": sum(t["runs"] for t in tables),
        "cost_usd": round(sum(float(c["cost"]["usd"]) for c in costs.values()), 8),
        "tables": [t for t in tables if t["status"] != "ok"],
        "ok_tables": counts["ok"],
    }


def _runs(steps: list[tuple[Any, ...]]) -> dict[str, list[dict[str, Any]]]:
    """Per table, its runs in the window (oldest first), each with its outcome: that of its
    last step (a run replayed after a failure counts as the replay's)."""
    by_run: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in steps:
        by_run.setdefault((str(row[0]), str(row[1])), []).append(row)
    runs: dict[str, list[dict[str, Any]]] = {}
    for (table, run_id), rows in by_run.items():
        _, _, step, status, error_type, message, _ = rows[-1]
        outcome = status
        error = None
        if status == "failed":
            outcome = "rejected" if error_type in ("RejectedInput", "ConfigError") else "failed"
            kind = error_type or "QualityCheckFailed"
            text = message or f"{step}: error-severity tests failed"
            error = truncate_bytes(redact(f"{kind}: {text}"), MESSAGE_BYTES)[:LAST_ERROR_CHARS]
        runs.setdefault(table, []).append({"run_id": run_id, "status": outcome, "error": error})
    return runs


def _warned(tests: list[tuple[Any, ...]]) -> dict[str, int]:
    """Per table, its warn-severity tests that did not pass in the window."""
    warned: dict[str, int] = {}
    for table, _run, _name, severity, status in tests:
        if severity == "warn" and status not in PASSING_TESTS:
            warned[str(table)] = warned.get(str(table), 0) + 1
    return warned


def _large_changes(
    publishes: list[tuple[Any, ...]], since: dt.datetime, until: dt.datetime
) -> dict[str, float]:
    """Per table, the largest share (%) of its rows a publish in the window added, removed
    or changed, when that is more than LARGE_CHANGE_PCT and USUAL_FACTOR times its usual
    (median) share. Tables without a primary key count no changes: never listed."""
    shares: dict[str, list[tuple[Any, float]]] = {}
    for table, _run, rows_after, loaded_at, added, removed, changed in publishes:
        if added is None or rows_after is None:
            continue
        before = int(rows_after) - int(added) + int(removed)
        if before <= 0:
            continue  # a first load adds everything: not a change of a table
        share = 100.0 * (int(added) + int(removed) + int(changed)) / before
        shares.setdefault(str(table), []).append((loaded_at, share))
    large: dict[str, float] = {}
    for table, history in shares.items():
        start, end = since.replace(tzinfo=None), until.replace(tzinfo=None)
        earlier = [s for at, s in history if at < start]
        usual = statistics.median(earlier) if earlier else 0.0
        biggest = max((s for at, s in history if start <= at <= end), default=0.0)
        if biggest > LARGE_CHANGE_PCT and biggest > USUAL_FACTOR * usual:
            large[table] = round(biggest, 1)
    return large


def _status(
    runs: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    freshness: str | None,
    warned: int | None,
    change_pct: float | None,
) -> str:
    if runs and runs[-1]["status"] in FAILING:
        return "failed"
    if freshness == "error":
        return "stale"
    if freshness == "warn":
        return "late"
    if warned:
        return "warned"
    if change_pct is not None:
        return "changed"
    return "recovered" if failures else "ok"


def history_links(table: str) -> dict[str, Any]:
    """Where to read the table's history: the command, and its row on the status page
    when REFLOAD_STATUS_URL says where `status --html` publishes it."""
    page = os.environ.get("REFLOAD_STATUS_URL", "").strip()
    return {
        "history_command": f"python -m handler history {table}",
        "history_url": f"{page}#table-{table}" if page else None,
    }


def digest_report(found: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The email (the alert report's shape: subject, text, html) and the digest itself."""
    counts = found["counts"]
    total = sum(counts.values())
    told = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if s != "ok")
    # No run at all in the window is no news of health (a stopped schedule looks the same).
    quiet = "all fine" if found["runs"] else "nothing ran"
    subject = (
        f"[refload] digest {found['hours']:g} h: {told or quiet} of {total} tables, "
        f"{found['runs']} runs, ${found['cost_usd']:.4f}"
    )
    lines = [
        f"refload digest from {found['since']} to {found['until']}: {total} tables, "
        f"{found['runs']} runs, cost ${found['cost_usd']:.6f}",
        "  ".join(f"{s.replace('_', ' ')} {n}" for s, n in counts.items()),
        "",
    ]
    for t in found["tables"]:
        lines.append(
            f"{t['status'].upper():<15} {t['table']}  runs {t['runs']}, failures "
            f"{t['failures']}" + _extra(t)
        )
        if t["last_error"]:
            lines.append(f"    last error: {t['last_error']}")
        lines.append(f"    history: {t['history_url'] or t['history_command']}")
    if not found["tables"]:
        lines.append(
            "Every table ran as usual."
            if found["runs"]
            else "No table ran in the window: nothing failed, and nothing was loaded either."
        )
    e = html.escape
    rows = "".join(
        f"<tr><td><b>{e(t['status'].replace('_', ' '))}</b></td><td>{_link(t)}</td>"
        f"<td>{t['runs']}</td><td>{t['failures']}</td><td>{e(_extra(t).strip(', '))}</td>"
        f"<td><code>{e(t['last_error'] or '')}</code></td></tr>"
        for t in found["tables"]
    )
    body = (
        f"<html><body><p>{e(lines[0])}</p><p>{e(lines[1])}</p>"
        "<table border='1' cellpadding='4' cellspacing='0'><tr><th>status</th><th>table</th>"
        "<th>runs</th><th>failures</th><th>what</th><th>last error</th></tr>"
        f"{rows}</table></body></html>"
    )
    return {
        "kind": "digest",
        "subject": subject,
        "table": "fleet",
        "status": "digest",
        "run_id": run_id,
        "digest": found,
        "text": "\n".join(lines) + "\n",
        "html": body,
    }


def _extra(t: dict[str, Any]) -> str:
    parts = []
    if t.get("warnings"):
        parts.append(f"{t['warnings']} warnings")
    if t.get("freshness") in ("warn", "error"):
        parts.append(f"freshness {t['freshness']}")
    if t.get("change_pct") is not None:
        parts.append(f"{t['change_pct']:g}% of rows changed")
    if t.get("cost_usd"):
        parts.append(f"${t['cost_usd']:.6f}")
    return "".join(f", {p}" for p in parts)


def _link(t: dict[str, Any]) -> str:
    name = html.escape(t["table"])
    if t["history_url"]:
        return f'<a href="{html.escape(t["history_url"])}">{name}</a>'
    return f"{name}<br><code>{html.escape(t['history_command'])}</code>"


def send_digest(report: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Through every configured channel but ServiceNow; a channel that fails is logged and
    reported, never raised (the digest is still printed)."""
    sent: dict[str, Any] = {}
    for name in channels_from_env():
        if name in SKIPPED_CHANNELS:
            continue
        try:
            sent[name] = {"status": "sent", "ref": CHANNELS[name](report, payload)}
        except Exception as error:
            reason = truncate_bytes(redact(f"{type(error).__name__}: {error}"), MESSAGE_BYTES)
            log.error("digest channel failed", channel=name, error=reason)
            sent[name] = {"status": "failed", "error": reason}
    return sent
