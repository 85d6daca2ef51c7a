"""Recent runs of a table, read back from the audit tables (`python -m handler history`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from steps.shared.warehouse.base import Warehouse


def recent_runs(
    warehouse: Warehouse, table_name: str, limit: int = 10, samples: bool = False
) -> list[dict[str, Any]]:
    """Newest first: each run's steps, rows published and test results; with `samples`,
    the sample keys its publish added, removed and changed (the ledger's change_samples).

    A run's status and tests are its last attempt's (see `attempts`); every attempt's
    steps are listed, each with its `attempt` number.
    """
    history = []
    for run_id, started, finished in warehouse.table_runs(table_name, limit):
        steps = warehouse.run_steps(run_id, table_name)
        published = warehouse.run_publishes(run_id)
        tests = warehouse.run_tests(run_id)
        tried = attempts([Step(*row) for row in steps])
        since = tried[-2][-1].logged_at if len(tried) > 1 else None
        history.append(
            {
                "run_id": run_id,
                "started": str(started),
                "finished": str(finished),
                "status": attempt_status(tried[-1]),
                "attempts": len(tried),
                "steps": [
                    {
                        "step": s.step,
                        "status": s.status,
                        "error_type": s.error_type,
                        "error": s.error,
                        "attempt": number,
                    }
                    for number, attempt in enumerate(tried, 1)
                    for s in attempt
                ],
                "rows_published": published[0][0] if published else None,
                "load_mode": published[0][1] if published else None,
                # Keys added/removed/changed by the publish (tables with a primary key).
                "changes": (
                    dict(zip(("added", "removed", "changed"), published[0][2:5], strict=True))
                    if published and published[0][2] is not None
                    else None
                ),
                # A rollback's: the run whose file it published again.
                "restored_run": (
                    restored_run(warehouse, published[0][6], published[0][7])
                    if published and published[0][1] == "rollback"
                    else None
                ),
                **({"change_samples": _samples(published)} if samples else {}),
                "checks": [
                    {
                        "name": t[0],
                        "type": t[1],
                        "severity": t[2],
                        "status": t[3],
                        "observed": t[4],
                        "expected": t[5],
                    }
                    for t in tests
                    if since is None or t[6] > since
                ],
            }
        )
    return history


def restored_run(warehouse: Warehouse, target: str, curated_uri: str) -> str | None:
    """The run that first published the curated file a rollback published again."""
    return warehouse.first_publish_of(target, curated_uri)


def _samples(published: list[tuple[Any, ...]]) -> dict[str, list[dict[str, Any]]] | None:
    """The ledger row's sample keys per kind (None: no publish, or no primary key)."""
    if not published or not published[0][5]:
        return None
    samples: dict[str, list[dict[str, Any]]] = json.loads(published[0][5])
    return samples


@dataclass(frozen=True)
class Step:
    """One etl_audit.run_log row of a run."""

    step: str
    status: str
    error_type: str | None
    error: str | None
    logged_at: Any


def attempts(steps: list[Step]) -> list[list[Step]]:
    """A run's run_log rows (oldest first) split into attempts: the replay of an alert's
    re-run input, or a Step Functions retry, runs the same run id again from a step.

    An attempt ends where a run ends: at a failed step, at validate (the last step), or at
    a load that found the file stale. Rows after the last end are an attempt under way.
    """
    tried: list[list[Step]] = [[]]
    for step in steps:
        tried[-1].append(step)
        if step.status in ("failed", "stale") or step.step == "validate":
            tried.append([])
    return [attempt for attempt in tried if attempt] or [[]]


def attempt_status(attempt: list[Step]) -> str:
    """An attempt's outcome, as `run --json` reported it."""
    failed = [s for s in attempt if s.status == "failed"]
    if failed:
        return _run_status(len(failed), failed[-1].error_type, 0)
    if any(s.status == "stale" for s in attempt):
        return "stale"  # a file older than the table's: nothing validated, no alert
    validated = [s for s in attempt if s.step == "validate"]
    return _run_status(0, None, len(validated))


def _changes(added: Any, removed: Any, changed: Any) -> dict[str, int] | None:
    """A ledger row's change set counts (None: a table without a primary key)."""
    if added is None:
        return None
    return {"added": int(added), "removed": int(removed), "changed": int(changed)}


def _run_status(failures: int, error_type: str | None, validated: int, stale: int = 0) -> str:
    """A run's outcome from its run_log rows, as `run --json` reports it."""
    if failures:
        if error_type in ("RejectedInput", "ConfigError"):
            return "rejected"
        # A failed validate row has no error type; a before-publish test raises this one.
        return "failed" if error_type in (None, "QualityCheckFailed") else "error"
    if stale:  # a file older than the table's: the run ends at load, nothing validated
        return "stale"
    return "passed" if validated else "running"


def fleet_history(
    warehouse: Warehouse, runs_per_table: int = 30
) -> dict[str, list[dict[str, Any]]]:
    """Every table's recent runs, oldest first: status, rows after publish, and how many
    tests passed, failed (error severity) and warned.

    Three queries for the whole fleet (not three per run): a window function keeps the
    newest runs of each table.
    """
    limit = int(runs_per_table)
    # Every run_log row of the newest runs: a run's status is its last attempt's.
    rows = warehouse.fleet_steps(limit)
    published = {
        (table, run_id): (rows_after, loaded_at, _changes(added, removed, changed))
        for table, run_id, rows_after, loaded_at, added, removed, changed in (
            warehouse.fleet_publishes(limit)
        )
    }
    # Per run, its tests counted per write (one write per step and attempt, one time).
    tests: dict[tuple[str, str], list[tuple[Any, int, int, int]]] = {}
    for table, run_id, executed_at, passed, failed, warned in warehouse.fleet_tests(limit):
        tests.setdefault((table, run_id), []).append(
            (executed_at, int(passed), int(failed), int(warned))
        )
    steps: dict[tuple[str, str], list[Step]] = {}
    for table, run_id, step, status, error_type, logged_at in rows:
        steps.setdefault((table, run_id), []).append(
            Step(step, status, error_type, None, logged_at)
        )
    history: dict[str, list[dict[str, Any]]] = {}
    for (table, run_id), run_steps in sorted(
        steps.items(), key=lambda item: (item[0][0], item[1][-1].logged_at)
    ):
        tried = attempts(run_steps)
        since = tried[-2][-1].logged_at if len(tried) > 1 else None
        counted = [t for t in tests.get((table, run_id), []) if since is None or t[0] > since]
        rows_after, _, changes = published.get((table, run_id), (None, None, None))
        history.setdefault(table, []).append(
            {
                "run_id": run_id,
                "finished": run_steps[-1].logged_at,
                "status": attempt_status(tried[-1]),
                "attempts": len(tried),
                "published": rows_after is not None,
                "rows": None if rows_after is None else int(rows_after),
                "changes": changes,
                # No test ran in the last attempt: `status` shows `tests -`, not "0/0 passed".
                "tests_ran": bool(counted),
                "tests_passed": sum(t[1] for t in counted),
                "tests_failed": sum(t[2] for t in counted),
                "tests_warned": sum(t[3] for t in counted),
            }
        )
    return history
