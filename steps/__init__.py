"""refload's steps, and (in `shared/`) what they share. docs/architecture.md
draws the flow and says which folder holds what:

    raw file ──ingest──> curated Parquet ──load──> target + ledger ──validate──> audit rows
                                                                     └─ any failure ─> notify

Each step is a module with `run(payload) -> dict` (handler.aws.dispatch.STEPS):
`ingest/` (with its readers, transform, dedupe, hooks, Spark engine and pandas `frames`),
`load`, `validate`, `notify`, and the scheduled `freshness`.
"""
