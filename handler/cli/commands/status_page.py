"""The status page for a fleet of 150 tables: grouped, counted and filtered.

Tables that need someone (failing, stale, late) come first, each owner's together, then the
rest, by owner too; the counts per status sit at the top and a filter box narrows the
rows (table, owner, status; `#filter=TEXT` in the address fills it in, so a link can share
a view). Each row is `#table-NAME`, where the digest links. Still no external asset.
"""

from __future__ import annotations

import html
from typing import Any

NEEDS_LOOK = ("failing", "stale", "late")
NO_OWNER = "no owner"
BLOCKS = {"attention": "Needs a look", "rest": "Everything else"}

CSS = """
.counts { margin: 0 0 10px; display: flex; gap: 6px; flex-wrap: wrap; align-items: center; }
.counts button { font: inherit; font-size: 12px; border: 1px solid #ccc; border-radius: 12px;
                 background: #fff; padding: 2px 10px; cursor: pointer; }
.counts button b { margin-left: 4px; }
.counts .count-failing { border-color: #c62828; color: #c62828; }
.counts .count-stale { border-color: #ad1457; color: #ad1457; }
.counts .count-late { border-color: #ef6c00; color: #ef6c00; }
.counts .runs { color: #666; font-size: 12px; margin-left: 8px; }
#filter { font: inherit; padding: 4px 8px; width: 320px; margin: 0 8px 10px 0; }
tr.block-row th { background: #e4e4ea; font-size: 13px; text-transform: none; }
tr.owner-row th { background: #f7f7f9; font-size: 12px; text-transform: none;
                  letter-spacing: 0; color: #333; }
tr.owner-row th span { color: #888; font-weight: 400; margin-left: 6px; }
tr:target td { background: #fff8e1; }
"""

SCRIPT = """
const tableRows = [...document.querySelectorAll("tr[data-table]")];
const box = document.getElementById("filter");
function applyFilter() {
  const terms = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
  let shown = 0;
  for (const r of tableRows) {
    const d = r.dataset;
    const text = [d.table, d.owner, d.status, d.attention].join(" ").toLowerCase();
    r.hidden = !terms.every(t => text.includes(t));
    if (!r.hidden) shown++;
  }
  for (const h of document.querySelectorAll("tr.owner-row, tr.block-row")) {
    const key = h.classList.contains("owner-row") ? "group" : "block";
    h.hidden = !tableRows.some(r => r.dataset[key] === h.dataset[key] && !r.hidden);
  }
  document.getElementById("shown").textContent = `showing ${shown} of ${tableRows.length}`;
  document.body.dataset.shown = shown;
}
box.addEventListener("input", applyFilter);
for (const b of document.querySelectorAll("button[data-filter]")) {
  b.addEventListener("click", () => { box.value = b.dataset.filter; applyFilter(); });
}
const asked = decodeURIComponent(location.hash.slice(1));
if (asked.startsWith("filter=")) box.value = asked.slice("filter=".length);
applyFilter();
"""


def owner_name(table: dict[str, Any]) -> str:
    return str((table.get("owner") or {}).get("name") or NO_OWNER)


def grouped(tables: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(block, owner, tables): the tables that need a look first, then the rest. `tables`
    come worst first (fleet_status sorts them), so in each block the owner of the worst
    table leads (a failing table is never below another owner's late one), and each
    owner's tables keep that order."""
    groups = []
    for block in BLOCKS:
        members = [t for t in tables if (t["attention"] in NEEDS_LOOK) == (block == "attention")]
        owners = list(dict.fromkeys(owner_name(t) for t in members))
        groups += [(block, o, [t for t in members if owner_name(t) == o]) for o in owners]
    return groups


def counts_bar(tables: list[dict[str, Any]], attentions: tuple[str, ...]) -> str:
    """The counts at the top: by what the tables need (a button filters to them), and by
    their last run's status."""
    buttons = "".join(
        f'<button type="button" data-filter="{a}" class="count-{a}">{a}'
        f"<b>{sum(t['attention'] == a for t in tables)}</b></button>"
        for a in attentions
    )
    statuses: dict[str, int] = {}
    for t in tables:
        statuses[t["status"]] = statuses.get(t["status"], 0) + 1
    runs = ", ".join(f"{n} {html.escape(s.replace('_', ' '))}" for s, n in sorted(statuses.items()))
    return (
        f'<div class="counts" id="counts">{buttons}'
        f'<span class="runs">last runs: {runs or "none"}</span></div>'
        '<input id="filter" type="search" placeholder="filter: table, owner or status" '
        'aria-label="filter the tables"><span id="shown"></span>'
    )


def group_header(
    block: str, owner: str, index: int, members: list[dict[str, Any]], columns: int = 8
) -> str:
    emails = ", ".join((members[0].get("owner") or {}).get("emails") or [])
    needs = sum(t["attention"] in NEEDS_LOOK for t in members)
    what = f"{len(members)} tables" + (f", {needs} need a look" if needs else "")
    return (
        f'<tr class="owner-row" data-block="{block}" data-group="{index}" '
        f'data-owner="{html.escape(owner)}"><th colspan="{columns}">{html.escape(owner)}'
        f"<span>{html.escape(emails)}{' · ' if emails else ''}{what}</span></th></tr>"
    )


def block_header(block: str, count: int, columns: int = 8) -> str:
    return (
        f'<tr class="block-row" data-block="{block}"><th colspan="{columns}">'
        f"{BLOCKS[block]}: {count} tables</th></tr>"
    )
