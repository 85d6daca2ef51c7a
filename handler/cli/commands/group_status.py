"""Table groups in `status` and its page: each group's members, its last group run and
the members holding a file that is not published yet (docs: operations.md, "Table groups")."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steps.shared.warehouse.base import Warehouse


def group_rows(config_root: str, warehouse: Warehouse) -> list[dict[str, Any]]:
    """One row per valid group file under the root (none, and no query, without groups)."""
    from steps.freshness import iso
    from steps.shared.config.group import group_uris, read_group
    from steps.shared.errors import ConfigError
    from steps.shared.warehouse.audit_groups import last_group_publish, pending_members

    rows = []
    for uri in group_uris(config_root):
        try:
            group = read_group(uri)
        except ConfigError as error:
            # As a broken table config: a row saying so, or the group is silently gone.
            rows.append(_broken_row(uri, error))
            continue
        last = last_group_publish(warehouse, group.tables)
        pending = pending_members(warehouse, group.tables)
        rows.append(
            {
                "group": group.group,
                "members": group.tables,
                "last_group_run": {"run_id": last[0], "published_at": iso(last[1])}
                if last
                else None,
                "pending": sorted(pending),
                # Some members' files wait for these members' (none, when all or none do).
                "waiting_for": [t for t in group.tables if t not in pending] if pending else [],
                "waiting_since": iso(min(pending.values())) if pending else None,
            }
        )
    return rows


def _broken_row(uri: str, error: Exception) -> dict[str, Any]:
    return {
        "group": uri.rsplit("/", 1)[-1].removesuffix(".json"),
        "members": [],
        "last_group_run": None,
        "pending": [],
        "waiting_for": [],
        "waiting_since": None,
        "config": uri,
        "error": {"type": type(error).__name__, "message": str(error)},
    }


def _line(group: dict[str, Any]) -> str:
    if group.get("error"):
        return f"group {group['group']:<12} INVALID_CONFIG  {group['error']['message']}"
    last = group["last_group_run"]
    run = f"last group run {last['run_id']} at {last['published_at']}" if last else "never run"
    pending = (
        f"pending {', '.join(group['pending'])} since {group['waiting_since']}"
        if group["pending"]
        else "nothing pending"
    )
    if group.get("waiting_for"):
        pending += f", waiting for {', '.join(group['waiting_for'])}"
    return f"group {group['group']:<12} members {', '.join(group['members'])}; {run}; {pending}"


def print_groups(groups: list[dict[str, Any]]) -> None:
    for group in groups:
        print(_line(group))


def groups_html(groups: list[dict[str, Any]]) -> str:
    """The page's own "Groups" section (empty without groups): a list, not table rows, so
    that the page's count of tables stays a count of tables."""
    if not groups:
        return ""
    e = html.escape
    items = []
    for g in groups:
        last = g["last_group_run"]
        run = (
            f"last group run <code>{e(last['run_id'])}</code> at "
            f"{e(last['published_at'].replace('T', ' ').removesuffix('Z'))} UTC"
            if last
            else "never run as a group"
        )
        pending = (
            f"pending: <b>{e(', '.join(g['pending']))}</b> since {e(g['waiting_since'])}"
            if g["pending"]
            else "nothing pending"
        )
        if g.get("error"):
            items.append(
                f'<li data-group="{e(g["group"])}" data-pending=""><b>{e(g["group"])}</b>: '
                f"INVALID_CONFIG · {e(g['error']['message'])}</li>"
            )
            continue
        items.append(
            f'<li data-group="{e(g["group"])}" data-pending="{e(",".join(g["pending"]))}">'
            f"<b>{e(g['group'])}</b>: {e(', '.join(g['members']))} · {run} · {pending}</li>"
        )
    return (
        '<h2 style="font-size:16px;margin:20px 0 6px">Groups</h2>'
        f'<ul id="groups">{"".join(items)}</ul>'
    )
