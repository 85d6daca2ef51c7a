"""The Lambda entry point, event parsing, routing, replay and logging."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from handler import STEPS, lambda_handler
from handler.aws.events import to_payload
from handler.cli import main
from steps.shared.errors import AlertNotDelivered, ConfigError, RejectedInput
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
    from steps.shared.warehouse.client import SqlClient

    opened: list[str] = []
    connect = SqlClient.conn.fget  # type: ignore[attr-defined]

    def counted(self: SqlClient) -> object:
        if self._conn is None:
            opened.append(self.url)
        return connect(self)

    monkeypatch.setattr(SqlClient, "conn", property(counted))
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
            "known: digest, freshness, ingest, load, notify, validate",
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
    # The status is the error class's own (WarehouseUnavailable: error), not re-derived.
    assert (alert["status"], alert["subject"].split(" on ")[0]) == (
        "error",
        "[refload] dim_currency error",
    )
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


@pytest.mark.slow
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
    monkeypatch.setenv("REFLOAD_UNROUTED", "alert")  # the default ignores it: see below
    event = json.loads((EVENTS / "s3_notification_put.json").read_text())
    event["Records"][0]["s3"]["object"]["key"] = "vendor%2Bx/2026-11-01/feed.csv"
    path = Path("event.json")
    path.write_text(json.dumps(event))
    code = main(["replay", str(path), "--warehouse", warehouse_url, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 2
    assert summary["error"]["message"] == (
        "vendor+x/2026-11-01/feed.csv: no table config routes this object key; known prefixes: "
        f"country/, currency/, dim_zipcode/, subdivision/; routing reads the table configs under "
        f"'{CONFIGS}': set REFLOAD_CONFIG_ROOT (or the command's --config-root)"
    )


def _routed_folder(tmp_path: Path) -> Path:
    """dim_currency beside a config that is not JSON and one with an unknown key."""
    folder = tmp_path / "routed"
    (folder / "mappings").mkdir(parents=True)
    (folder / "dim_currency.json").write_text((CONFIGS / "dim_currency.json").read_text())
    shutil.copy(CONFIGS / "mappings" / "currency_mapping.csv", folder / "mappings")
    (folder / "broken.json").write_text('{"table_name": \n')
    (folder / "t_typo.json").write_text(
        json.dumps({"table_name": "t_typo", "mapping_file": "m.csv", "delimter": ";"})
    )
    return folder


def _replay_key(key: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    """Replay the saved S3 notification with another (encoded) key: (exit code, summary)."""
    event = json.loads((EVENTS / "s3_notification_put.json").read_text())
    event["Records"][0]["s3"]["object"]["key"] = key
    path = Path("event.json")
    path.write_text(json.dumps(event))
    code = main(["replay", str(path), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_broken_config_fails_only_the_files_routed_to_it(s3, tmp_path, monkeypatch, capsys):
    folder = _routed_folder(tmp_path)
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(folder))
    source = next((SAMPLES / "currency").glob("*/*"))
    s3.put_object(Bucket="raw", Key="currency/2026-11-01/iso4217.csv", Body=source.read_bytes())
    s3.put_object(Bucket="raw", Key="t_typo/2026-11-01/a.csv", Body=b"a\n1\n")

    code, summary = _replay_key("currency/2026-11-01/iso4217.csv", capsys)
    assert code == 0, summary["error"]
    assert (summary["table"], summary["rows_loaded"]) == ("dim_currency", 178)

    code, summary = _replay_key("t_typo/2026-11-01/a.csv", capsys)
    assert code == 2
    assert (summary["table"], summary["error"]["type"]) == ("t_typo", "ConfigError")
    assert summary["error"]["message"] == (
        f"{folder / 't_typo.json'}: delimter: unknown key 'delimter' (did you mean 'delimiter'?)"
    )

    code, summary = _replay_key("vendor/2026-11-01/a.csv", capsys)
    assert code == 2
    assert summary["error"]["message"].startswith(
        "vendor/2026-11-01/a.csv: no table config routes this object key; known prefixes: "
        f"currency/, t_typo/; not routable: {folder / 'broken.json'} (not valid JSON"
    )


def test_two_configs_with_the_same_longest_prefix_is_an_error_naming_both(
    tmp_path, monkeypatch, capsys
):
    folder = _routed_folder(tmp_path)
    (folder / "broken.json").unlink()
    twin = json.loads((CONFIGS / "dim_currency.json").read_text())
    (folder / "dim_currency_v2.json").write_text(
        json.dumps({**twin, "table_name": "dim_currency_v2"})
    )
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(folder))
    code = main(["replay", str(EVENTS / "s3_notification_put.json"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 2
    assert summary["error"]["message"] == (
        "currency/2026-11-01/iso4217.csv: 2 table configs claim this object key with the "
        f"same source_prefix 'currency/': {folder / 'dim_currency.json'}, "
        f"{folder / 'dim_currency_v2.json'}; give each table its own prefix"
    )


def _write_config(uri: str, body: dict, s3: object | None) -> None:
    data = json.dumps(body).encode()
    if uri.startswith("s3://"):
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        s3.put_object(Bucket=bucket, Key=key, Body=data)  # type: ignore[attr-defined]
    else:
        Path(uri).write_bytes(data)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_changed_config_is_routed_at_once_in_a_warm_container(where, s3, tmp_path, monkeypatch):
    root = str(tmp_path / "cfg") if where == "local" else "s3://config-bucket/tables"
    if where == "local":
        Path(root).mkdir()
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", root)
    monkeypatch.setenv("REFLOAD_CURATED_ROOT", str(tmp_path / "curated"))
    mapping = CODES_MAPPING.encode()
    s3.put_object(Bucket="raw", Key="feed/2026-11-01/a.csv", Body=b"code\nAA\n")
    s3.put_object(Bucket="config-bucket", Key="tables/m.csv", Body=mapping)
    if where == "local":
        (Path(root) / "m.csv").write_bytes(mapping)
    event = json.loads((EVENTS / "eventbridge_object_created.json").read_text())
    event["detail"]["object"]["key"] = "feed/2026-11-01/a.csv"
    config = f"{root}/t_one.json"
    body = {"table_name": "t_one", "source_prefix": "feed/", "mapping_file": "m.csv"}
    _write_config(config, body, s3)
    assert lambda_handler(event, None)["table"] == "t_one"
    _write_config(config, {**body, "table_name": "t_renamed"}, s3)
    assert lambda_handler(event, None)["table"] == "t_renamed"


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


@pytest.mark.slow
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
        "heavy = sorted(m for m in ('pandas', 'pyarrow', 'duckdb', 'numpy', 'openlineage') "
        "if m in sys.modules)\n"
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


# --- landed objects as AWS sends them --------------------------------------------------

ENCODED_EVENTS = ["eventbridge_object_created_encoded_key.json", "s3_notification_encoded_key.json"]
DECODED_KEY = "currency/2026-11-01/ISO 4217 Währungen.csv"


@pytest.mark.parametrize("name", ENCODED_EVENTS)
def test_a_url_encoded_key_is_decoded_and_loaded_through_replay(
    name, s3, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(CONFIGS))
    source = next((SAMPLES / "currency").glob("*/*"))
    s3.put_object(Bucket="raw", Key=DECODED_KEY, Body=source.read_bytes())
    code = main(["replay", str(EVENTS / name), "--curated-root", "s3://curated", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary["error"]
    assert (summary["table"], summary["rows_loaded"]) == ("dim_currency", 178)
    state = lambda_handler(json.loads((EVENTS / name).read_text()), None)
    assert state["source"] == f"s3://raw/{DECODED_KEY}"
    assert state["rows_written"] == 178


MARKERS = ["currency/2026-11-01/", "currency/2026-11-01/_SUCCESS", "currency/.keep"]


@pytest.mark.parametrize("key", MARKERS)
def test_folder_markers_and_marker_files_are_ignored_quietly(
    key, s3, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(CONFIGS))
    event = json.loads((EVENTS / "eventbridge_object_created.json").read_text())
    event["detail"]["object"]["key"] = key
    Path("marker.json").write_text(json.dumps(event))
    warehouse = tmp_path / "w.duckdb"
    code = main(["replay", "marker.json", "--warehouse", f"duckdb:///{warehouse}", "--json"])
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert code == 0
    assert summary["status"] == "ignored"
    assert summary["skipped_reason"].startswith("ignored: a ")
    assert summary["alert"] is None and summary["error"] is None
    assert not (tmp_path / "outbox").exists()
    assert not warehouse.exists()  # no run_log row: nothing was run
    [record] = [json.loads(line) for line in err.splitlines()]
    assert (record["event"], record["source"]) == ("object ignored", f"s3://raw/{key}")

    result = lambda_handler(event, None)
    assert result["ignored"] is True and result["source"] == f"s3://raw/{key}"


def test_a_notification_with_several_records_is_rejected(monkeypatch, capsys):
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(CONFIGS))
    event = json.loads((EVENTS / "s3_notification_put.json").read_text())
    event["Records"] *= 2
    Path("two.json").write_text(json.dumps(event))
    code = main(["replay", "two.json", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 2
    assert summary["error"] == {
        "type": "ConfigError",
        "message": "the S3 notification has 2 records; refload runs one object per event: "
        "replay each record as its own event",
    }


# --- run ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["2026/11/01", "x" * 65, "-leading-dash", "a b"])
def test_an_invalid_run_id_exits_2_before_anything_runs(run_id, run_cli, tmp_path):
    code, summary = run_cli(
        CONFIGS / "dim_currency.json",
        next((SAMPLES / "currency").glob("*/*")),
        f"--run-id={run_id}",
    )
    assert code == 2
    assert summary["status"] == "rejected"
    assert summary["error"] == {
        "type": "ConfigError",
        "message": f"run id {run_id!r} is not valid: use 1-64 letters, digits, '.', '_', ':' "
        "or '-', starting with a letter or digit",
    }
    assert not (tmp_path / "outbox").exists()


def test_the_longest_valid_run_id_loads(run_cli, sql, tmp_path):
    run_id = "r" + "2026-11-01T04:12:09.123_" * 2 + "x" * 15
    assert len(run_id) == 64
    code, summary = run_cli(
        CONFIGS / "dim_currency.json",
        next((SAMPLES / "currency").glob("*/*")),
        f"--run-id={run_id}",
    )
    assert code == 0, summary["error"]
    assert sql("SELECT DISTINCT run_id FROM etl_audit.run_log") == [(run_id,)]


def _load_currency(warehouse: str, tmp_path: Path) -> dict:
    state = {
        "step": "ingest",
        "config": str(CONFIGS / "dim_currency.json"),
        "source": str(next((SAMPLES / "currency").glob("*/*"))),
        "warehouse": warehouse,
        "curated_root": str(tmp_path / "curated"),
    }
    for step in ("ingest", "load", "validate"):
        state = lambda_handler({**state, "step": step}, None)
    return state


def test_validate_with_only_config_reports_what_it_cannot_check(tmp_path, capsys):
    warehouse = f"duckdb:///{tmp_path / 'w.duckdb'}"
    _load_currency(warehouse, tmp_path)
    payload = {"step": "validate", "config": str(CONFIGS / "dim_currency.json"), "run_id": "v-1"}
    Path("validate.json").write_text(json.dumps(payload))
    code = main(["replay", "validate.json", "--warehouse", warehouse, "--json"])
    summary = json.loads(capsys.readouterr().out)
    checks = {c["type"]: (c["status"], c["observed"], c["expected"]) for c in summary["checks"]}
    assert checks["row_count_match"] == ("error", None, None)  # not "observed 178, expected 0"
    assert checks["row_count_change"] == ("error", None, None)
    assert checks["uniqueness"] == ("pass", 0, 0)
    assert code == 1
    [alert] = [json.loads(p.read_text()) for p in (tmp_path / "outbox").glob("*.alert.json")]
    assert (
        "  error: the payload has no rows_written (rows ingest wrote): re-run from load to run "
        "this test\n" in alert["text"]
    )
    import duckdb

    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        [(status, details)] = con.execute(
            "SELECT status, details FROM etl_audit.data_quality_tests "
            "WHERE run_id = 'v-1' AND test_name = 'row_count_match'"
        ).fetchall()
    assert status == "error" and "re-run from load" in json.loads(details)["error"]


def test_every_log_record_of_a_step_carries_the_table(tmp_path, capsys):
    capsys.readouterr()
    with pytest.raises(RejectedInput):
        lambda_handler(
            {
                "step": "ingest",
                "config": str(CONFIGS / "dim_currency.json"),
                "source": str(tmp_path / "missing.csv"),
                "curated_root": str(tmp_path / "c"),
                "warehouse": f"duckdb:///{tmp_path / 'w.duckdb'}",
            },
            None,
        )
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [r["event"] for r in records] == ["step started", "step failed"]
    assert {r["table"] for r in records} == {"dim_currency"}


WIDE_MAPPING = "source_column,target_column,data_type,nullable\ncode,code,string,true\n" + "".join(
    f"blob{i},blob{i},string,true\n" for i in range(4)
)
# Six tests that fail on every row, each with sample rows of 20 KB.
WIDE_TESTS = [
    {"type": "not_null", "columns": ["code"]},
    {"type": "accepted_values", "column": "blob0", "values": ["x"]},
    {"type": "regex", "column": "blob1", "pattern": "^y$"},
    {"type": "max_length", "column": "blob2", "bytes": 10},
    {"type": "uniqueness", "columns": ["blob3"]},
    {"type": "custom_sql", "name": "every_row", "sql": "SELECT * FROM {table}"},
]


def wide_rows(count: int = 12) -> str:
    """A CSV whose rows are 20 KB wide (four 5,000-character fields)."""
    rows = [f",{'a' * 5000}{i},{'b' * 5000}{i},{'c' * 5000}{i},{'d' * 5000}" for i in range(count)]
    return "code,blob0,blob1,blob2,blob3\n" + "\n".join(rows) + "\n"


def test_what_a_step_returns_stays_small_whatever_the_rows(table_dir, write, tmp_path):
    config = table_dir(WIDE_MAPPING, name="t_wide", quality_tests=WIDE_TESTS)
    state = {
        "step": "ingest",
        "config": str(config),
        "source": str(write("wide.csv", wide_rows())),
        "warehouse": f"duckdb:///{tmp_path / 'w.duckdb'}",
        "curated_root": str(tmp_path / "curated"),
    }
    for step in ("ingest", "load", "validate"):
        state = lambda_handler({**state, "step": step}, None)
    assert state["validation"] == "failed"
    assert [c["status"] for c in state["checks"]] == ["fail"] * 6
    assert len(json.dumps(state)) < 32 * 1024
    notified = lambda_handler({**state, "step": "notify", "failed_step": "validate"}, None)
    assert set(notified) == {"table", "run_id", "notified", "failed_channels", "subject"}
    assert len(json.dumps(notified)) < 2 * 1024


def _every_channel_down(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("REFLOAD_OUTBOX", str(blocker / "outbox"))
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "outbox,ses")  # ses: no sender configured


def test_notify_fails_when_no_channel_delivered(monkeypatch, tmp_path):
    _every_channel_down(monkeypatch, tmp_path)
    event = json.loads((EVENTS / "step_notify_catch.json").read_text())
    with pytest.raises(AlertNotDelivered) as caught:
        lambda_handler(event, None)
    assert caught.value.message.startswith(
        "no alert channel delivered the report (outbox: NotADirectoryError: "
    )
    assert "; ses: ConfigError: email alerts need REFLOAD_ALERT_EMAIL_FROM" in caught.value.message


def test_a_local_run_keeps_its_exit_code_and_shows_the_channels_that_failed(
    table_dir, write, run_cli, monkeypatch, tmp_path
):
    _every_channel_down(monkeypatch, tmp_path)
    config = table_dir(CODES_MAPPING, quality_tests=[{"type": "row_count_between", "min": 5}])
    code, summary = run_cli(config, write("a.csv", "code\nAA\n"))
    assert (code, summary["status"]) == (1, "failed")
    assert {name: outcome["status"] for name, outcome in summary["alert"].items()} == {
        "outbox": "failed",
        "ses": "failed",
    }


def test_importing_the_handler_leaves_pydantic_for_the_first_event(tmp_path):
    # Lambda's init phase imports the handler; the payload models load with the first event.
    code = (
        "import json, sys, handler, steps.notify\n"
        "print(json.dumps(sorted(m for m in ('pydantic', 'pandas', 'pyarrow', 'duckdb') "
        "if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin", "PYTHONPATH": str(ROOT)},
    )
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize(("setting", "expected"), [(None, "0"), ("1", "1")])
def test_the_handler_process_runs_without_transparent_huge_pages(setting, expected):
    """Importing the handler (Lambda's entry point; `python -m handler` too) turns THP off
    for its process, unless REFLOAD_TRANSPARENT_HUGEPAGES=1 keeps the system's setting."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "REFLOAD_TRANSPARENT_HUGEPAGES"}
    if setting:
        env["REFLOAD_TRANSPARENT_HUGEPAGES"] = setting
    probe = (
        "import handler; print(next(line.split()[1] for line in open('/proc/self/status') "
        "if line.startswith('THP_enabled')))"
    )

    def with_huge_pages() -> None:  # this test process imported the handler: undo it
        import ctypes

        ctypes.CDLL(None).prctl(41, 0, 0, 0, 0)

    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=with_huge_pages,
    )
    assert done.stdout.strip() == expected


def _replay_landed(event: dict, warehouse_url: str, capsys) -> tuple[int, dict, str]:
    path = Path("landed.json")
    path.write_text(json.dumps(event))
    capsys.readouterr()
    code = main(["replay", str(path), "--warehouse", warehouse_url, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def _emf(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if '"_aws"' in line]


@pytest.mark.parametrize("how", ["unrouted", "empty"])
def test_an_unrouted_or_empty_object_is_a_warning_and_a_metric_not_a_page(
    how, s3, monkeypatch, warehouse_url, capsys, tmp_path
):
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(CONFIGS))
    monkeypatch.setenv("REFLOAD_METRICS", "stderr")
    event = json.loads((EVENTS / "eventbridge_object_created.json").read_text())
    if how == "unrouted":
        event["detail"]["object"]["key"] = "vendor%2Bx/2026-11-01/feed.csv"
    else:
        event["detail"]["object"]["size"] = 0
    s3.put_object(Bucket="raw", Key=event["detail"]["object"]["key"], Body=b"")

    code, summary, err = _replay_landed(event, warehouse_url, capsys)

    assert code == 0
    assert summary["status"] == "ignored" and summary["error"] is None
    expected = {
        "unrouted": "not loaded: no table config routes this object key; known prefixes: "
        "country/, currency/, dim_zipcode/, subdivision/",
        "empty": "not loaded: an empty object (0 bytes)",
    }[how]
    assert summary["skipped_reason"] == expected
    [warning] = [json.loads(line) for line in err.splitlines() if "object not loaded" in line]
    assert (warning["level"], warning["reason"]) == ("warning", expected)
    [metric] = _emf(err)
    name = {"unrouted": "ObjectsUnrouted", "empty": "ObjectsEmpty"}[how]
    assert metric[name] == 1 and metric["Step"] == "ingest"
    assert metric["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [{"Name": name, "Unit": "Count"}]
    assert metric.get("Table") == (None if how == "unrouted" else "dim_zipcode")
    assert not (tmp_path / "outbox").exists() or not list((tmp_path / "outbox").iterdir())
    # In AWS the state machine's IngestedOrIgnored choice ends such an execution quietly.
    assert lambda_handler(event, None)["ignored"] is True

    # Opted in: it fails and alerts, as any file.
    monkeypatch.setenv("REFLOAD_UNROUTED", "alert")
    code, summary, err = _replay_landed(event, warehouse_url, capsys)
    assert code == 2 and summary["status"] == "rejected"
    assert summary["alert"]["outbox"]["status"] == "sent"


def test_an_unexpected_error_leaves_the_handler_with_its_text_cut(
    warehouse_url, sql, tmp_path, monkeypatch
):
    # A stand-in for a bug whose exception carries a whole 1 MB document in its text.
    import steps.validate

    def bug(payload):
        raise KeyError("k" * 1_000_000)

    monkeypatch.setattr(steps.validate, "run", bug)
    event = {
        "step": "validate",
        "config": str(CONFIGS / "dim_currency.json"),
        "run_id": "bug-1",
        "curated_root": str(tmp_path / "c"),
        "warehouse": warehouse_url,
    }
    with pytest.raises(KeyError) as raised:  # the type the Lambda runtime reports stays
        lambda_handler(event, None)
    # str(error) is the Lambda errorMessage, which a Step Functions Catch puts in the state.
    assert len(str(raised.value).encode()) <= 2048
    assert "kkk…(truncated, 1000002 bytes)" in str(raised.value)
    [(message,)] = sql("SELECT error_message FROM etl_audit.run_log WHERE run_id = 'bug-1'")
    assert message.startswith("internal error: 'kkk") and len(message.encode()) == 65535


# --- object versions and long keys ----------------------------------------------------

CODE_AND_N_MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),strip,,false,\nn,n,integer,,,,\n"
)


def _landed(name: str, key: str, version_id: str | None) -> dict:
    """A saved S3 notification or EventBridge event, for `key` (URL-encoded, as AWS sends
    it) and, on a versioned bucket, the version the upload made."""
    from urllib.parse import quote_plus

    event = json.loads((EVENTS / name).read_text())
    s3_notification = "Records" in event
    landed = event["Records"][0]["s3"]["object"] if s3_notification else event["detail"]["object"]
    landed["key"] = quote_plus(key)
    if version_id:
        landed["versionId" if s3_notification else "version-id"] = version_id
    return event


@pytest.mark.slow
@pytest.mark.parametrize("name", ["s3_notification_put.json", "eventbridge_object_created.json"])
def test_an_event_loads_the_version_it_names_not_the_latest(
    name, s3, table_dir, warehouse_url, sql, tmp_path, monkeypatch, capsys
):
    """Two quick uploads on a versioned bucket: each event loads its own upload, and a
    replay of the first event loads the first version again."""
    s3.put_bucket_versioning(Bucket="raw", VersioningConfiguration={"Status": "Enabled"})
    config = table_dir(CODE_AND_N_MAPPING, source_prefix="codes/", primary_key=["code"])
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(config.parent))
    key = "codes/2026-11-01/codes.csv"
    first = s3.put_object(Bucket="raw", Key=key, Body=b"code,n\nAA,1\nBB,2\n")["VersionId"]
    second = s3.put_object(Bucket="raw", Key=key, Body=b"code,n\nCC,3\n")["VersionId"]

    def replay(version_id: str) -> dict:
        path = tmp_path / f"{version_id}.json"
        path.write_text(json.dumps(_landed(name, key, version_id)))
        capsys.readouterr()
        code = main(["replay", str(path), "--warehouse", warehouse_url, "--json"])
        summary = json.loads(capsys.readouterr().out)
        assert code == 0, summary["error"]
        return summary

    replay(first)
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("AA", 1), ("BB", 2)]
    replay(second)
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("CC", 3)]
    summary = replay(first)

    assert summary["published"] is True
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("AA", 1), ("BB", 2)]
    assert sql("SELECT source_version FROM etl_audit.load_ledger ORDER BY loaded_at") == [
        (first,),
        (second,),
        (first,),
    ]


def test_an_event_naming_a_version_that_is_gone_is_rejected(
    s3, table_dir, warehouse_url, sql, tmp_path, monkeypatch, capsys
):
    s3.put_bucket_versioning(Bucket="raw", VersioningConfiguration={"Status": "Enabled"})
    config = table_dir(CODE_AND_N_MAPPING, source_prefix="codes/")
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(config.parent))
    key = "codes/2026-11-01/codes.csv"
    version = s3.put_object(Bucket="raw", Key=key, Body=b"code,n\nAA,1\n")["VersionId"]
    s3.put_object(Bucket="raw", Key=key, Body=b"code,n\nCC,3\n")
    s3.delete_object(Bucket="raw", Key=key, VersionId=version)
    path = tmp_path / "event.json"
    path.write_text(json.dumps(_landed("s3_notification_put.json", key, version)))

    code = main(["replay", str(path), "--warehouse", warehouse_url, "--json"])

    summary = json.loads(capsys.readouterr().out)
    assert (code, summary["status"]) == (2, "rejected")
    assert summary["error"]["message"] == (f"s3://raw/{key}: version '{version}' does not exist")
    assert sql("SELECT COUNT(*) FROM etl_audit.load_ledger") == [(0,)]


def test_a_key_of_1024_bytes_with_a_long_last_part_loads(
    s3, table_dir, warehouse_url, sql, tmp_path, monkeypatch, capsys
):
    """A key's last part may be longer than a file name may be (255 bytes): the scratch
    copy of the object is named by a hash, and the file loads."""
    config = table_dir(CODE_AND_N_MAPPING, source_prefix="codes/")
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(config.parent))
    key = "codes/2026-11-01/" + "ä" * 500 + "xyz.csv"
    assert len(key.encode()) == 1024 and len(key.rsplit("/", 1)[1].encode()) > 255
    s3.put_object(Bucket="raw", Key=key, Body=b"code,n\nAA,1\nBB,2\n")
    path = tmp_path / "event.json"
    path.write_text(json.dumps(_landed("s3_notification_put.json", key, None)))

    code = main(["replay", str(path), "--warehouse", warehouse_url, "--json"])

    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary["error"]
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("AA", 1), ("BB", 2)]
    assert sql("SELECT source_uri FROM etl_audit.load_ledger") == [(f"s3://raw/{key}",)]


# --- replay on a laptop: a raw root stands in for the raw bucket (#30.2) ----------------

LANDED_EVENTS = [
    "eventbridge_object_created.json",
    "eventbridge_object_created_encoded_key.json",
    "s3_notification_encoded_key.json",
    "s3_notification_put.json",
]


def _landed_key(event: dict) -> str:
    from urllib.parse import unquote_plus

    landed = event["Records"][0]["s3"] if "Records" in event else event["detail"]
    return unquote_plus(landed["object"]["key"])


def _raw_folder(tmp_path: Path, key: str) -> Path:
    """The sample file of the key's table, saved under the raw root at the key's path."""
    table = key.split("/")[0].removeprefix("dim_")
    raw = tmp_path / "raw"
    (raw / key).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(next((SAMPLES / table).glob("*/*")), raw / key)
    return raw


@pytest.fixture
def no_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    """A laptop without S3: any S3 call fails at once (nothing listens on port 9)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REFLOAD_RAW_ROOT", raising=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", LANDED_EVENTS)
def test_a_saved_event_replays_from_a_raw_root_with_no_s3(
    name, no_s3, warehouse_url, sql, tmp_path, capsys
):
    event_file = EVENTS / name
    key = _landed_key(json.loads(event_file.read_text()))
    raw = _raw_folder(tmp_path, key)
    replay = ["replay", str(event_file), "--raw-root", str(raw), "--config-root", str(CONFIGS)]
    replay += ["--warehouse", warehouse_url, "--curated-root", str(tmp_path / "c"), "--json"]

    code = main(replay)
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary["error"]
    assert summary["status"] == "passed" and summary["published"] is True
    assert summary["table"] == "dim_" + key.split("/")[0].removeprefix("dim_")
    [(source,)] = sql(
        "SELECT source_uri FROM etl_audit.load_ledger WHERE run_id = ?", summary["run_id"]
    )
    assert source == str(raw / key)

    # The same file again is already in the target; --force publishes it all the same.
    assert main(replay) == 0
    assert json.loads(capsys.readouterr().out)["published"] is False
    assert main([*replay, "--force"]) == 0
    assert json.loads(capsys.readouterr().out)["published"] is True


def test_the_raw_root_may_come_from_the_environment(
    no_s3, warehouse_url, tmp_path, monkeypatch, capsys
):
    event_file = EVENTS / "s3_notification_put.json"
    raw = _raw_folder(tmp_path, _landed_key(json.loads(event_file.read_text())))
    monkeypatch.setenv("REFLOAD_RAW_ROOT", str(raw))
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(CONFIGS))
    code = main(["replay", str(event_file), "--warehouse", warehouse_url, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert (code, summary["table"], summary["rows_loaded"]) == (0, "dim_currency", 178)


@pytest.mark.parametrize(
    "key",
    [
        "currency/..%2F..%2Fsecret.csv",
        "currency/2026-11-01/..%2F..%2F..%2Fsecret.csv",
        "currency/./iso4217.csv",
    ],
)
def test_a_key_with_dot_segments_never_leaves_the_raw_root(
    key, no_s3, warehouse_url, sql, tmp_path, capsys
):
    raw = tmp_path / "raw"
    (raw / "currency").mkdir(parents=True)
    shutil.copy(next((SAMPLES / "currency").glob("*/*")), tmp_path / "secret.csv")
    shutil.copy(next((SAMPLES / "currency").glob("*/*")), raw / "currency" / "iso4217.csv")
    event = json.loads((EVENTS / "s3_notification_put.json").read_text())
    event["Records"][0]["s3"]["object"]["key"] = key
    Path("event.json").write_text(json.dumps(event))

    args = ["--raw-root", str(raw), "--config-root", str(CONFIGS), "--warehouse", warehouse_url]
    code = main(["replay", "event.json", *args, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert (code, summary["status"], summary["error"]["type"]) == (2, "rejected", "ConfigError")
    assert summary["error"]["message"].startswith(f"{raw}, object key ")
    assert "outside the raw root" in summary["error"]["message"]
    assert sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'dim_currency'")[
        0
    ] == (0,)


@pytest.mark.parametrize("configs", ["missing", "empty"])
def test_a_routing_failure_says_where_configs_are_read_and_alerts_into_the_outbox(
    configs, no_s3, warehouse_url, tmp_path, capsys
):
    event_file = EVENTS / "eventbridge_object_created_encoded_key.json"
    raw = _raw_folder(tmp_path, _landed_key(json.loads(event_file.read_text())))
    if configs == "empty":
        Path("configs").mkdir()
    outbox = tmp_path / "my alerts"
    args = ["--raw-root", str(raw), "--warehouse", warehouse_url, "--outbox", str(outbox)]

    code = main(["replay", str(event_file), *args, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert (code, summary["status"], summary["error"]["type"]) == (2, "rejected", "ConfigError")
    assert (
        "set REFLOAD_CONFIG_ROOT (or the command's --config-root)" in (summary["error"]["message"])
    )
    assert summary["alert"]["outbox"]["status"] == "sent"
    [alert] = outbox.glob("*.alert.json")
    assert " " not in alert.name and alert.name.endswith(f"-{summary['run_id']}.alert.json")
    assert not (tmp_path / "outbox").exists()
    # The alert's re-run input is the event itself: with the configs found, it loads.
    command = json.loads(alert.read_text())["rerun_command"]
    rerun = command.split(" replay ", 1)[1].strip("'")
    code = main(["replay", rerun, *args, "--config-root", str(CONFIGS), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert (code, summary["table"], summary["rows_loaded"]) == (0, "dim_currency", 178)


def test_an_alerts_rerun_input_from_aws_replays_from_a_raw_root(
    no_s3, warehouse_url, sql, tmp_path, capsys
):
    key = "currency/2026-11-01/iso4217.csv"
    raw = _raw_folder(tmp_path, key)
    # What an alert's rerun.json holds after an ingest failed in AWS.
    rerun = {
        "step": "ingest",
        "start_at": "ingest",
        "config": str(CONFIGS / "dim_currency.json"),
        "source": f"s3://raw-bucket-123/{key}",
        "table": "dim_currency",
        "run_id": "20261101T041209Z-abc123",
    }
    Path("rerun.json").write_text(json.dumps(rerun))
    code = main(["replay", "rerun.json", "--raw-root", str(raw), "--warehouse", warehouse_url])
    assert code == 0, capsys.readouterr().out
    assert sql("SELECT source_uri FROM etl_audit.load_ledger") == [(str(raw / key),)]


def test_a_saved_event_whose_warehouse_is_not_text_is_a_config_error(tmp_path, capsys):
    """The local pipeline imports the warehouse's driver early from the event's URL: an
    event whose `warehouse` is no URL is refused by the payload's check, not a traceback."""
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps({"step": "ingest", "config": "t.json", "source": "a.csv", "warehouse": 5})
    )
    outbox = str(tmp_path / "outbox")
    code = main(["replay", str(event), "--outbox", outbox, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 2
    assert summary["error"]["type"] == "ConfigError"
    assert "warehouse: Input should be a valid string" in summary["error"]["message"]


def test_a_run_on_duckdb_exits_without_noise_on_stderr(tmp_path):
    """`python -m handler` skips the exit's last garbage collection only where nothing
    minds: DuckDB's bindings would report what it leaves as leaked, on every run."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "handler", "run", "--quiet"),
            *("--config", str(CONFIGS / "dim_currency.json")),
            *("--source", str(next((SAMPLES / "currency").glob("*/*")))),
            *("--warehouse", f"duckdb:///{tmp_path / 'w.duckdb'}"),
            *("--curated-root", str(tmp_path / "cur"), "--outbox", str(tmp_path / "outbox")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "leaked" not in done.stderr, done.stderr[-2000:]
