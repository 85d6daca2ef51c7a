"""The status page's "last change" panel: each table's last publish against the one before,
as `diff` sees it (handler.cli.commands.diff), drawn as one cell.

Only the page reads curated files: the one-line and JSON `status` stay two audit queries.
"""

from __future__ import annotations

import html
import shlex
from typing import Any

SHOWN_SAMPLES = 3  # rows of each kind in the panel; `diff` lists up to 20


def last_changes(config_root: str, warehouse_url: str | None) -> dict[str, dict[str, Any]]:
    """Per table: the `diff --json` of its last two publishes, or {"note": why there is
    none} (a first publish, a curated file gone). One ledger query for the fleet."""
    from handler.cli.commands.diff import compare, compared
    from steps.freshness import table_configs
    from steps.shared.config.table import load_table_config
    from steps.shared.errors import RefloadError
    from steps.shared.warehouse import open_warehouse
    from steps.shared.warehouse.audit_publishes import last_publishes

    configs, _ = table_configs(config_root)
    with open_warehouse(warehouse_url, must_exist=True) as warehouse:
        warehouse.ensure_audit_tables()
        publishes = last_publishes(warehouse, 2)
    panels: dict[str, dict[str, Any]] = {}
    for uri, config in configs:
        pair = publishes.get(config.table_name, [])
        if len(pair) < 2:
            panels[config.table_name] = {"note": "first publish" if pair else "no publish yet"}
            continue
        try:
            key, ignored = compared(load_table_config(uri))
            panels[config.table_name] = compare(config.table_name, pair[0], pair[1], key, ignored)
        except RefloadError as error:  # a curated file past its retention, a broken sheet
            panels[config.table_name] = {"note": error.message}
    return panels


def panel_html(table: str, change: dict[str, Any] | None) -> str:
    """The cell: counts (data- attributes too), columns added or removed, a few sample rows
    in a <details>, and the `diff` command that lists them all."""
    e = html.escape
    if not change or "keys" not in change:
        note = (change or {}).get("note", "-")
        return f'<td class="last-change" data-state="none">{e(note)}</td>'
    keys, columns, samples = change["keys"], change["columns"], change["samples"]
    counts = ", ".join(f"{kind} {keys[kind]:,}" for kind in ("added", "removed", "changed"))
    cols = "".join(
        f"<br><code>columns {kind}: {e(', '.join(columns[kind]))}</code>"
        for kind in ("added", "removed")
        if columns[kind]
    )
    items = [
        f"<li>{kind}: <code>{e(_row(row))}</code></li>"
        for kind in ("added", "removed")
        for row in samples[kind][:SHOWN_SAMPLES]
    ] + [
        f"<li>changed <code>{e(_row(c['key']))}</code>: <code>{e(_row(c['before']))}</code> → "
        f"<code>{e(_row(c['after']))}</code></li>"
        for c in samples["changed"][:SHOWN_SAMPLES]
    ]
    command = shlex.join(["python", "-m", "handler", "diff", table])
    details = (
        f"<details><summary>samples</summary><ul>{''.join(items)}</ul></details>" if items else ""
    )
    return (
        f'<td class="last-change" data-state="diff" data-added="{keys["added"]}" '
        f'data-removed="{keys["removed"]}" data-changed="{keys["changed"]}">'
        f"<span>keys {counts}</span>{cols}{details}"
        f"<code>{e(command)}</code></td>"
    )


def _row(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())
