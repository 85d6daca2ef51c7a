"""How the CLI prints what a command found: the run summary, a table's history, a preview,
the freshness of the fleet.
The work is elsewhere (handler.cli.pipeline, handler.cli.commands); these only format."""

from __future__ import annotations

from typing import Any

from steps.shared.checks.status import passed as test_passed


def print_summary(summary: dict[str, Any]) -> None:
    def n(value: Any) -> str:
        return "-" if value is None else f"{value:,}"

    checks = summary["checks"]
    passed = sum(test_passed(c) for c in checks)
    line = (
        f"{summary['table'] or '?':<18} {summary['status'].upper():<9} "
        f"read {n(summary['rows_read'])}  rejected {n(summary['rows_rejected'])}  "
        f"duplicates {n(summary['duplicates_dropped'])}  loaded {n(summary['rows_loaded'])}"
        f"  tests {passed}/{len(checks)} passed  run {summary['run_id']}"
    )
    if summary.get("skipped_reason"):
        line += f"\n    nothing published: {summary['skipped_reason']}"
    if summary.get("changes"):
        line += "\n    keys " + ", ".join(f"{k} {v:,}" for k, v in summary["changes"].items())
    for check in checks:
        if check["status"] != "pass":
            line += (
                f"\n    test {check['name']} {check['status']} ({check['severity']}): "
                f"observed {check['observed']}, expected {check['expected']}"
            )
    if summary["error"]:
        line += f"\n    {summary['error']['type']}: {summary['error']['message']}"
    print(line)


def _steps_line(steps: list[dict[str, Any]]) -> str:
    """`ingest ok · load ok · validate failed | replay: validate passed`."""
    parts: list[str] = []
    for i, step in enumerate(steps):
        text = f"{step['step']} {step['status']}"
        if i and step["attempt"] != steps[i - 1]["attempt"]:
            parts[-1] += f" | replay: {text}"
            continue
        parts.append(text)
    return " · ".join(parts)


def _sample_line(kind: str, sample: dict[str, Any]) -> str:
    """`changed  code=BB: name 'Beta' -> 'Bravo'`."""
    key = ", ".join(f"{name}={value}" for name, value in sample.get("key", {}).items())
    values = [
        f"{column} {value!r} -> {sample['after'].get(column)!r}"
        for column, value in (sample.get("before") or {}).items()
    ]
    return f"      {kind:<8} {key}" + (": " + "; ".join(values) if values else "")


def print_history(runs: list[dict[str, Any]], table: str) -> None:
    if not runs:
        print(f"no runs of {table} recorded")
    for run in runs:
        rows = (
            ""
            if run["rows_published"] is None
            else (f"  published {run['rows_published']:,} ({run['load_mode']})")
        )
        if run.get("restored_run"):
            rows = rows.removesuffix(")") + f" of run {run['restored_run']})"
        if run.get("changes"):
            rows += "  keys " + ", ".join(f"{k} {v:,}" for k, v in run["changes"].items())
        status = run["status"].upper() + (" on replay" if run["attempts"] > 1 else "")
        spent = f"  cost ${run['cost']['usd']:.6f}" if run.get("cost") else ""
        print(
            f"{run['finished'][:19]}  {status:<7} run {run['run_id']}  "
            f"{_steps_line(run['steps'])}{rows}{spent}"
        )
        for step in run["steps"]:
            if step["error"]:
                print(f"    {step['step']}: {step['error_type']}: {step['error']}")
        for check in run["checks"]:
            print(
                f"    {check['status']:<5} {check['name']} ({check['severity']}): observed "
                f"{check['observed']}, expected {check['expected']}"
            )
        if "change_samples" in run and run.get("changes"):
            samples = run["change_samples"] or {}
            kinds = ("added", "removed", "changed")
            shown = sum(len(samples.get(kind) or []) for kind in kinds)
            total = sum(run["changes"].values())
            print(f"    sample keys ({shown} of {total:,}, from the ledger):")
            for kind in kinds:
                for sample in samples.get(kind) or []:
                    print(_sample_line(kind, sample))


def print_cost_by_month(months: list[dict[str, Any]], table: str) -> None:
    """`history --cost`: what the table's runs cost on AWS, per month (steps.shared.cost)."""
    print(f"cost of {table} per month (USD, on AWS):")
    if not months:
        print("    no run with a recorded cost")
    for month in months:
        print(f"    {month['month']}  ${month['usd']:.6f}  {month['runs']} runs")


def print_preview(result: Any, rows: int) -> None:
    """What ingest made of a file (steps.ingest.frames.preview), `rows` of each kind."""
    summary = result.summary
    print(
        f"{summary['table']}: read {summary['rows_read']:,}  rejected "
        f"{summary['rows_rejected']:,}  duplicates {summary['duplicates_dropped']:,}  "
        f"would load {summary['rows_written']:,}  (nothing published)"
    )
    shown = result.rows.head(rows)
    print(f"\nfirst {len(shown)} row(s):\n{shown.to_string(index=False)}")
    if len(result.rejects):
        print(f"\nrejected:\n{result.rejects.head(rows).to_string(index=False)}")
    if summary["refused"]:
        print(f"\n{summary['refused']}")


def print_freshness(outcome: dict[str, Any], results: list[Any]) -> None:
    from steps.freshness import cadence

    if not results:
        print("no table config has a freshness key: nothing to check")
    for result in results:
        if result.last_loaded_at is None:
            seen = "never received a file"
        else:
            seen = (
                f"last file {result.last_loaded_at:%Y-%m-%d %H:%M} UTC "
                f"({result.age_hours:,.1f} h ago)"
            )
        line = (
            f"{result.table:<18} {result.status.upper():<12} {seen}  "
            f"[{cadence(result.config, result.pattern)}]"
        )
        if result.due:  # `expect: auto`: the file it waits for
            late = f", {result.due.late_hours:,.1f} h late" if result.due.late_hours else ""
            line += f"  due {result.due.due:%Y-%m-%d %H:%M} UTC{late}"
        alert = outcome["alerts"].get(result.table)
        if alert:
            sent = ", ".join(f"{name} {a['status']}" for name, a in alert.items())
            line += f"  alert: {sent}"
        print(line)
    for group in outcome.get("groups_waiting") or []:
        print(
            f"group {group['group']:<12} WAITING      for {', '.join(group['waiting_for'])} "
            f"since {group['waiting_since']} ({group['age_hours']:,.1f} h; pending: "
            f"{', '.join(group['pending'])})"
        )
