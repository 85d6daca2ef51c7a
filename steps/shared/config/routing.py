"""Routing a landed object key to its table's config: what each config file says about
routing, read leniently, and the longest-prefix match. Needs no validated config."""

from __future__ import annotations

import json
from dataclasses import dataclass

from steps.shared.errors import ConfigError


@dataclass(frozen=True)
class RoutingEntry:
    """What routing reads from one config file, leniently: a config that is broken in any
    other way still routes its own files (and fails them with its ConfigError), never
    another table's."""

    uri: str
    table: str | None
    prefix: str | None  # None: the file says nothing routing can use
    problem: str | None = None


def routing_entry(uri: str, data: bytes) -> RoutingEntry:
    """`source_prefix` (default `<table_name>/`) and `table_name`, if the file has them."""
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return RoutingEntry(uri, None, None, f"not valid JSON ({error})")
    if not isinstance(raw, dict):
        return RoutingEntry(uri, None, None, "not a JSON object")
    table = raw.get("table_name") if isinstance(raw.get("table_name"), str) else None
    prefix = raw.get("source_prefix")
    if not isinstance(prefix, str):
        prefix = f"{table}/" if table else None
    return RoutingEntry(uri, table, prefix, None if prefix else "no table_name or source_prefix")


def route_key(key: str, entries: list[RoutingEntry]) -> RoutingEntry:
    """The config whose routing prefix is the longest match for an object key.

    Two configs with that same longest prefix are an error naming both: which one wins
    must not depend on file names.
    """
    routable = [e for e in entries if e.prefix is not None]
    matches = [e for e in routable if key.startswith(str(e.prefix))]
    if not matches:
        message = "no table config routes this object key; known prefixes: " + ", ".join(
            sorted(str(e.prefix) for e in routable)
        )
        unreadable = [f"{e.uri} ({e.problem})" for e in entries if e.prefix is None]
        if unreadable:
            message += "; not routable: " + ", ".join(unreadable)
        # Unrouted for sure only when every config could be read: else the file may be one
        # the unreadable config would have taken.
        raise ConfigError(message, key=key, details={"unrouted": not unreadable})
    longest = max(len(str(e.prefix)) for e in matches)
    best = [e for e in matches if len(str(e.prefix)) == longest]
    if len(best) > 1:
        raise ConfigError(
            f"{len(best)} table configs claim this object key with the same source_prefix "
            f"'{best[0].prefix}': {', '.join(e.uri for e in best)}; give each table its own "
            "prefix",
            key=key,
        )
    return best[0]
