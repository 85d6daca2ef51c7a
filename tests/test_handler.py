"""The Lambda entry point, event parsing, routing, replay and logging."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from handler import STEPS, lambda_handler
from handler.cli import main
from handler.events import to_payload
from steps.errors import ConfigError
from tests.conftest import CONFIGS, ROOT, SAMPLES, ZIP_CSV

EVENTS = ROOT / "tests" / "events"


@pytest.mark.all_warehouses  # run_log rows on every warehouse
def test_steps_chain_through_the_handler_like_the_state_machine(warehouse_url, sql, tmp_path):
    state = {
        "step": "ingest",
        "config": str(CONFIGS / "dim_currency.json"),
        "source": str(next((SAMPLES / "currency").glob("*/*"))),
        "warehouse": warehouse_url,
        "curated_root": str(tmp_path / "curated"),
    }
    for step in ("ingest", "load", "validate"):
        state = lambda_handler({**state, "step": step}, None)
    assert state["validation"] == "passed"
    assert (state["rows_written"], state["rows_loaded"], state["duplicates_dropped"]) == (
        178,
        178,
        3,
    )
    assert sql("SELECT COUNT(*) FROM public.dim_currency") == [(178,)]
    assert sql(
        "SELECT step, status FROM etl_audit.run_log WHERE run_id = ? ORDER BY logged_at",
        state["run_id"],
    ) == [("ingest", "ok"), ("load", "ok"), ("validate", "passed")]


CODES_MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),strip,,false,\n"
)


def _count_connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from steps.warehouse.base import Warehouse

    opened: list[str] = []
    connect = Warehouse.conn.fget  # type: ignore[attr-defined]

    def counted(self: Warehouse) -> object:
        if self._conn is None:
            opened.append(self.url)
        return connect(self)

    monkeypatch.setattr(Warehouse, "conn", property(counted))
    return opened


def test_a_local_run_opens_the_warehouse_once(
    warehouse_url, table_dir, write, run_cli, sql, monkeypatch
):
    opened = _count_connections(monkeypatch)
    code, summary = run_cli(table_dir(CODES_MAPPING), write("a.csv", "code\nAA\nBB\n"))
    assert code == 0, summary["error"]
    assert opened == [warehouse_url]  # load, validate and the run_log rows share it
    steps = sql("SELECT step, status FROM etl_audit.run_log ORDER BY step")
    assert steps == [("ingest", "ok"), ("load", "ok"), ("validate", "passed")]


def test_a_failed_step_does_not_hand_its_connection_on(
    warehouse_url, table_dir, write, run_cli, sql, monkeypatch
):
    opened = _count_connections(monkeypatch)
    config = table_dir(
        CODES_MAPPING,
        quality_tests=[{"type": "row_count_between", "min": 5, "when": "before_publish"}],
    )
    code, summary = run_cli(config, write("a.csv", "code\nAA\nBB\n"))
    assert code == 1
    assert summary["error"]["type"] == "QualityCheckFailed"
    assert opened == [warehouse_url, warehouse_url]  # the run_log rows used a fresh one
    steps = sql("SELECT step, status FROM etl_audit.run_log ORDER BY step")
    assert steps == [("ingest", "ok"), ("load", "failed")]
    assert sql("SELECT status FROM etl_audit.data_quality_tests") == [("fail",)]


@pytest.mark.all_warehouses  # run_log rows on every warehouse
def test_an_unexpected_error_is_recorded_and_alerted(
    table_dir, write, run_cli, sql, monkeypatch, tmp_path
):
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("steps.load.load_table_config", broken)
    code, summary = run_cli(table_dir(CODES_MAPPING), write("a.csv", "code\nAA\n"))
    assert code == 3
    assert summary["error"] == {"type": "RuntimeError", "message": "internal error: boom"}
    assert sql(
        "SELECT step, status, table_name, error_type, error_message FROM etl_audit.run_log "
        "ORDER BY step"
    ) == [
        ("ingest", "ok", "t_codes", None, None),
        ("load", "failed", "t_codes", "RuntimeError", "internal error: boom"),
    ]
    [alert] = [f for f in (tmp_path / "outbox").glob("*.json") if ".rerun." not in f.name]
    assert json.loads(alert.read_text())["error"] == summary["error"]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            {"step": "ingset", "config": "c", "source": "s"},
            "unknown step 'ingset' (did you mean 'ingest'?); "
            "known: freshness, ingest, load, notify, validate",
        ),
        ({"step": "load", "config": "c"}, "'load' payload is missing curated_uri, content_hash"),
        (
            {"hello": "world"},
            "event is neither a step payload (with 'step') nor an S3 / EventBridge "
            "Object Created event; keys: hello",
        ),
    ],
)
def test_bad_events_are_config_errors(event, message):
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")
    ):
        lambda_handler(event, None)


def test_notify_turns_a_step_functions_catch_into_an_alert(tmp_path: Path):
    event = json.loads((EVENTS / "step_notify_catch.json").read_text())
    result = lambda_handler(event, None)
    [alert_file] = (tmp_path / "outbox").glob("*.alert.json")
    alert = json.loads(alert_file.read_text())
    assert result["notified"]["outbox"] == {"status": "sent", "ref": str(alert_file)}
    assert alert["error"] == {
        "type": "WarehouseUnavailable",
        "message": "redshift: connection reset by peer",
    }
    assert alert["failed_step"] == "load"
    assert (
        "Execution:     arn:aws:states:us-east-1:123456789012:execution:refload:" in alert["text"]
    )


def test_s3_notification_routes_by_key_prefix_and_loads(
    s3, warehouse_url, sql, tmp_path, monkeypatch
):
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(CONFIGS))
    source = next((SAMPLES / "currency").glob("*/*"))
    s3.put_object(Bucket="raw", Key="currency/2026-11-01/iso4217.csv", Body=source.read_bytes())
    code = main(
        [
            "replay",
            str(EVENTS / "s3_notification_put.json"),
            "--warehouse",
            warehouse_url,
            "--curated-root",
            "s3://curated/refload",
            "--json",
        ]
    )
    assert code == 0
    assert sql("SELECT COUNT(*) FROM public.dim_currency") == [(178,)]
    [(uri, version)] = sql("SELECT curated_uri, source_version FROM etl_audit.load_ledger")
    assert uri.startswith("s3://curated/refload/dim_currency/")
    head = s3.head_object(Bucket="curated", Key=uri.removeprefix("s3://curated/"))
    assert head["ContentLength"] > 0
    assert version == s3.head_object(Bucket="raw", Key="currency/2026-11-01/iso4217.csv")[
        "ETag"
    ].strip('"')


def test_seed_config_verbatim_from_s3_via_eventbridge(s3, warehouse_url, sql, monkeypatch, capsys):
    from tests.test_samples import SEED_CONFIG

    s3.put_object(
        Bucket="config-bucket", Key="tables/dim_zipcode.json", Body=json.dumps(SEED_CONFIG).encode()
    )
    s3.put_object(
        Bucket="config-bucket",
        Key="mappings/zipcode_mapping.xlsx",
        Body=(CONFIGS / "mappings" / "zipcode_mapping.xlsx").read_bytes(),
    )
    s3.put_object(
        Bucket="raw", Key="dim_zipcode/2026-11-01/us_zipcodes.csv", Body=ZIP_CSV.read_bytes()
    )
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", "s3://config-bucket/tables/")
    code = main(
        [
            "replay",
            str(EVENTS / "eventbridge_object_created.json"),
            "--warehouse",
            warehouse_url,
            "--curated-root",
            "s3://curated",
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary["error"]
    assert summary["rows_loaded"] == 42789
    assert sql("SELECT city FROM public.dim_zipcode WHERE zipcode = '00501'") == [("Holtsville",)]
    listed = s3.list_objects_v2(Bucket="curated", Prefix="dim_zipcode/")["Contents"]
    curated = summary["curated_uri"].removeprefix("s3://curated/")
    # Redshift's COPY reads a manifest that names the curated file, written beside it.
    manifest = [curated.removesuffix(".parquet") + ".manifest"]
    expected = sorted([curated, *(manifest if warehouse_url.startswith("redshift") else [])])
    assert [o["Key"] for o in listed] == expected


def test_object_key_no_config_routes_is_rejected(s3, monkeypatch, warehouse_url, capsys):
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(CONFIGS))
    event = json.loads((EVENTS / "s3_notification_put.json").read_text())
    event["Records"][0]["s3"]["object"]["key"] = "vendor%2Bx/2026-11-01/feed.csv"
    path = Path("event.json")
    path.write_text(json.dumps(event))
    code = main(["replay", str(path), "--warehouse", warehouse_url, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 2
    assert summary["error"]["message"] == (
        "vendor+x/2026-11-01/feed.csv: no table config routes this object key; known prefixes: "
        "country/, currency/, dim_zipcode/, subdivision/"
    )


def test_a_malformed_config_among_the_routed_ones_is_named(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "routed"
    folder.mkdir()
    (folder / "dim_currency.json").write_text((CONFIGS / "dim_currency.json").read_text())
    (folder / "broken.json").write_text('{"table_name": \n')
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(folder))
    code = main(["replay", str(EVENTS / "s3_notification_put.json"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 2
    assert summary["error"]["type"] == "ConfigError"
    assert summary["error"]["message"].startswith(
        f"{folder / 'broken.json'}, line 2: not valid JSON"
    )


def test_missing_s3_object_is_rejected_input(s3, warehouse_url, run_cli):
    code, summary = run_cli(CONFIGS / "dim_currency.json", "s3://raw/currency/nope.csv")
    assert code == 2
    assert summary["error"]["message"] == "s3://raw/currency/nope.csv: object does not exist"


def test_unreachable_storage_exits_3(monkeypatch, run_cli):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    code, summary = run_cli(CONFIGS / "dim_currency.json", "s3://raw/currency/a.csv")
    assert code == 3
    assert summary["error"]["type"] == "StorageUnavailable"
    assert summary["error"]["message"].startswith(
        "s3://raw/currency/a.csv: S3 could not be reached"
    )


def test_unreachable_warehouse_exits_3(tmp_path, capsys):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    code = main(
        [
            "run",
            "--config",
            str(CONFIGS / "dim_currency.json"),
            "--source",
            str(next((SAMPLES / "currency").glob("*/*"))),
            "--warehouse",
            f"duckdb:///{blocker}/w.duckdb",
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 3
    assert summary["status"] == "error"


@pytest.mark.parametrize(
    "name", ["step_ingest.json", "step_validate.json", "step_notify_catch.json"]
)
def test_replay_saved_step_events_from_the_repository(name, tmp_path):
    warehouse = f"duckdb:///{tmp_path / 'w.duckdb'}"
    args = [
        "--warehouse",
        warehouse,
        "--curated-root",
        str(tmp_path / "cur"),
        "--outbox",
        str(tmp_path / "outbox"),
        "--json",
    ]
    if name == "step_validate.json":  # validate needs a loaded table first
        subprocess.run(
            [sys.executable, "-m", "handler", "replay", str(EVENTS / "step_ingest.json"), *args],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    done = subprocess.run(
        [sys.executable, "-m", "handler", "replay", str(EVENTS / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    summary = json.loads(done.stdout)
    if name == "step_notify_catch.json":
        assert done.returncode == 1
        assert len(list((tmp_path / "outbox").glob("*.alert.json"))) == 1
    else:
        assert done.returncode == 0, done.stderr[-2000:]
        assert summary["status"] == "passed"
        assert [c["status"] for c in summary["checks"]] == ["pass"] * 4 + ["pass"]


def test_logs_are_json_lines_with_run_id_table_and_step(warehouse_url, tmp_path, capsys):
    lambda_handler(
        {
            "step": "ingest",
            "config": str(CONFIGS / "dim_currency.json"),
            "source": str(next((SAMPLES / "currency").glob("*/*"))),
            "run_id": "log-test",
            "curated_root": str(tmp_path / "c"),
            "warehouse": warehouse_url,
        },
        None,
    )
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finished = [r for r in records if r["event"] == "step finished"]
    assert finished and finished[0]["run_id"] == "log-test"
    assert finished[0]["step"] == "ingest"
    assert {r["level"] for r in records} <= {"info", "warning", "error"}
    assert all("timestamp" in r for r in records)


def test_every_registered_step_has_a_run_function():
    import importlib

    for step, module in STEPS.items():
        assert callable(importlib.import_module(module).run), step


def test_handler_and_notify_do_not_import_heavy_libraries(tmp_path):
    code = (
        "import json, sys, handler\n"
        "event = json.load(open(sys.argv[1]))\n"
        "handler.lambda_handler(event, None)\n"
        "heavy = sorted(m for m in ('pandas', 'pyarrow', 'duckdb', 'numpy') if m in sys.modules)\n"
        "print(json.dumps(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(EVENTS / "step_notify_catch.json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"REFLOAD_OUTBOX": str(tmp_path / "o"), "PATH": "/usr/bin", "PYTHONPATH": str(ROOT)},
    )
    assert json.loads(done.stdout) == []


def test_overlapping_prefixes_route_to_the_longest(tmp_path, monkeypatch):
    folder = tmp_path / "routed"
    folder.mkdir()
    for name, prefix in (("t_all", "vendor/"), ("t_fx", "vendor/fx/")):
        (folder / f"{name}.json").write_text(
            json.dumps({"table_name": name, "mapping_file": "m.csv", "source_prefix": prefix})
        )
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(folder))
    routed = {
        key: to_payload(
            {
                "source": "aws.s3",
                "detail-type": "Object Created",
                "detail": {"bucket": {"name": "raw"}, "object": {"key": key}},
            }
        )["config"]
        for key in ("vendor/fx/2026-11-01/rates.csv", "vendor/2026-11-01/list.csv")
    }
    assert routed == {
        "vendor/fx/2026-11-01/rates.csv": str(folder / "t_fx.json"),
        "vendor/2026-11-01/list.csv": str(folder / "t_all.json"),
    }
