"""What a run costs on AWS: Lambda GB-seconds, Step Functions transitions, S3 requests.

Each recorded step's result (and so its etl_audit.run_log row) carries `cost`: `{"usd",
"lambda_gb_seconds", "transitions", "s3_requests"}`; a run costs the sum of its steps
(every attempt counts: AWS bills retries too). Locally the same run is priced as it would
be on AWS, so a laptop run says what the Lambda one costs. Light on purpose: dispatch and
storage import it on the cold path.

    usd = GB-seconds x Lambda duration price + 1 x Lambda request price
        + transitions x Step Functions transition price
        + S3 writes/lists x their price + S3 reads x theirs

Not counted: notify's Lambda time (it runs only after a failure and is not in run_log; its
states are), the warehouse, data transfer, CloudWatch Logs, free tiers, and S3 reads made
by a driver itself (DuckDB's httpfs, Redshift's COPY): only what storage.py sends through
boto3.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

DEFAULT_MEMORY_MB = 2048
DEFAULT_REGION = "us-east-1"

# Public on-demand prices in USD, x86_64 (template.yaml's Architectures), first tier:
# Lambda per GB-second and per request: https://aws.amazon.com/lambda/pricing/
#   (x86 $0.0000166667 per GB-s, $0.20 per 1M requests, the same in the regions below);
# Step Functions Standard per state transition: https://aws.amazon.com/step-functions/pricing/
#   (per 1,000: $0.025 in most regions, $0.0279 in us-west-1);
# S3 Standard per request: https://aws.amazon.com/s3/pricing/ (per 1,000: PUT, COPY, POST,
#   LIST $0.005 and GET, HEAD $0.0004 in us-east-1; $0.0054 and $0.00043 in eu-central-1,
#   $0.0055 and $0.00044 in us-west-1).
# A region missing here is priced as us-east-1 (REFLOAD_COST_REGION picks another row).
PRICES: dict[str, dict[str, float]] = {
    "us-east-1": {
        "gb_second": 0.0000166667,
        "request": 0.20 / 1e6,
        "transition": 0.025 / 1000,
        "s3_write": 0.005 / 1000,
        "s3_read": 0.0004 / 1000,
    },
}
PRICES["us-east-2"] = PRICES["us-west-2"] = PRICES["eu-west-1"] = PRICES["us-east-1"]
PRICES["us-west-1"] = {
    **PRICES["us-east-1"],
    "transition": 0.0279 / 1000,
    "s3_write": 0.0055 / 1000,
    "s3_read": 0.00044 / 1000,
}
PRICES["eu-central-1"] = {
    **PRICES["us-east-1"],
    "s3_write": 0.0054 / 1000,
    "s3_read": 0.00043 / 1000,
}

# The states of statemachine.asl.json a step's execution passes through, by its outcome:
# the Task and the Choice/Pass/Succeed states around it (each one is a billed transition).
# A failure also takes the run through Notify and Failed: counted on the failed step, as
# notify itself is not in run_log (its Lambda time is not counted).
_NOTIFIED = ("Notify", "Failed")
TRANSITIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("ingest", "ok"): ("ChooseFirstStep", "Ingest", "IngestedOrIgnored"),
    ("ingest", "failed"): ("ChooseFirstStep", "Ingest", "IngestFailed", *_NOTIFIED),
    ("load", "ok"): ("Load", "PublishedOrStale"),
    ("load", "stale"): ("Load", "PublishedOrStale", "Stale"),
    ("load", "failed"): ("Load", "LoadFailed", *_NOTIFIED),
    ("validate", "ok"): ("Validate", "ValidationPassed", "Loaded"),
    ("validate", "failed"): ("Validate", "ValidationPassed", "ValidateFailed", *_NOTIFIED),
}

# S3 operations billed at the write/list price; other calls (GET, HEAD) at the read price,
# DELETE and abort are free.
_WRITES = ("Put", "Copy", "Post", "List", "Create", "Upload", "Complete")
_FREE = ("Delete", "Abort")


@dataclass
class Meter:
    """S3 requests counted while one step runs."""

    s3_writes: int = 0
    s3_reads: int = 0


# The running step's meter: a module global, not a context variable, because boto3's
# transfers (download_file, upload_file) call S3 from their own threads. One step runs at a
# time in a process (a Lambda invocation, the local pipeline).
_meter: Meter | None = None
_lock = threading.Lock()
# The Lambda context's memory_limit_in_mb, while handler.lambda_handler runs a step.
_memory_mb: ContextVar[int | None] = ContextVar("refload_memory_mb", default=None)


def count_s3_request(operation: str) -> None:
    """One boto3 S3 call (storage.py's client hooks this in); free calls are not counted."""
    meter = _meter
    if meter is None or operation.startswith(_FREE):
        return
    with _lock:
        if operation.startswith(_WRITES):
            meter.s3_writes += 1
        else:
            meter.s3_reads += 1


@contextmanager
def metering() -> Iterator[Meter]:
    global _meter
    outer, _meter = _meter, Meter()
    try:
        yield _meter
    finally:
        _meter = outer


@contextmanager
def lambda_memory(context: Any) -> Iterator[None]:
    """The invocation's memory from Lambda's context (None outside Lambda)."""
    memory = getattr(context, "memory_limit_in_mb", None)
    token = _memory_mb.set(int(memory) if memory else None)
    try:
        yield
    finally:
        _memory_mb.reset(token)


def memory_mb() -> int:
    """On Lambda, the context's; else AWS_LAMBDA_FUNCTION_MEMORY_SIZE (Lambda sets it too)."""
    from_context = _memory_mb.get()
    if from_context:
        return from_context
    try:
        return int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or DEFAULT_MEMORY_MB)
    except ValueError:
        return DEFAULT_MEMORY_MB


def prices() -> dict[str, float]:
    region = os.environ.get("REFLOAD_COST_REGION") or os.environ.get("AWS_REGION") or ""
    return PRICES.get(region.strip(), PRICES[DEFAULT_REGION])


def step_cost(step: str, outcome: str, seconds: float, meter: Meter) -> dict[str, Any]:
    """One step's cost: its invocation billed to the next millisecond at this memory."""
    billed_ms = max(1, math.ceil(seconds * 1000))
    gb_seconds = memory_mb() / 1024 * billed_ms / 1000
    transitions = len(TRANSITIONS.get((step, outcome), TRANSITIONS.get((step, "ok"), ())))
    price = prices()
    usd = (
        gb_seconds * price["gb_second"]
        + price["request"]
        + transitions * price["transition"]
        + meter.s3_writes * price["s3_write"]
        + meter.s3_reads * price["s3_read"]
    )
    return {
        "usd": round(usd, 8),
        "lambda_gb_seconds": round(gb_seconds, 6),
        "transitions": transitions,
        "s3_requests": meter.s3_writes + meter.s3_reads,
    }


_collected: ContextVar[list[dict[str, Any]] | None] = ContextVar(
    "refload_cost_collected", default=None
)


@contextmanager
def collecting() -> Iterator[list[dict[str, Any]]]:
    """The cost of every step run inside (the local pipeline sums a run's steps)."""
    costs: list[dict[str, Any]] = []
    token = _collected.set(costs)
    try:
        yield costs
    finally:
        _collected.reset(token)


def collect(spent: dict[str, Any]) -> None:
    collected = _collected.get()
    if collected is not None:
        collected.append(spent)


def total(costs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The sum of steps' costs (None: no step recorded one)."""
    found = [c for c in costs if isinstance(c, dict)]
    if not found:
        return None
    return {
        "usd": round(sum(float(c.get("usd") or 0) for c in found), 8),
        "lambda_gb_seconds": round(sum(float(c.get("lambda_gb_seconds") or 0) for c in found), 6),
        "transitions": sum(int(c.get("transitions") or 0) for c in found),
        "s3_requests": sum(int(c.get("s3_requests") or 0) for c in found),
    }
