"""refload's steps and what they share. One landed file flows top to bottom:

    raw file ──ingest──> curated Parquet ──load──> target + ledger ──validate──> audit rows
                                                                     └─ any failure ─> notify

The steps (handler.dispatch.STEPS runs each from its payload):
    ingest/      config + sheet + source -> typed, deduplicated curated Parquet
      __init__     the step: map chunk by chunk, set rejects aside, dedupe, write
      sources        reading CSV / Excel / JSON / Parquet as text, with line numbers
      transform      the mapping applied to a table of text, a thread per column
      dedupe         exact duplicates and repeated or empty keys (Arrow, or DuckDB on disk)
      hooks          a table's python_transform (pandas), held to the mapping
      spark          the same ingest on PySpark (engine: spark; EMR Serverless in AWS)
    load         curated Parquet -> staging -> target in ONE transaction, with the ledger
    validate     the table's after-publish tests, one audit row each
    notify       one report of any failure, sent through the alert channels
    freshness    (scheduled) tables that have gone too long without a file

Shared, grouped by concern:
    config       the table config: pydantic model, validation messages, routing
    mapping      the mapping sheet: parsing, and what each type and transform means
    table        a config with its sheet (TableSpec): what every step trusts
    sql          user SQL (custom_sql) parsed, guarded and rendered per dialect
    checks       data-quality checks: one function per check type (load's gates, validate)
    warehouse/   one loader, dialects as small overrides with their capabilities as data
    storage      local paths and s3:// URIs
    alerts       reports and channels (outbox, SES, SMTP, ServiceNow)
    recovery     when a table passes again: incidents resolved, "recovered" sent
    metrics      CloudWatch Embedded Metric Format lines
    lineage      OpenLineage run events, when a transport is configured
    progress     phases reported to a terminal (handler.progress draws them)
    frames       pandas previews of what ingest makes (steps.frames.preview)
    errors       one error hierarchy with transient / terminal markers
    names        identifier checks and "did you mean"
    secrets      redaction for every output channel

CLI-only code (init, check, status, history, rollback, dbt-sources) lives in handler/.
"""
