"""A renamed header column is refused with its candidate and the evidence (issue #33)."""

from __future__ import annotations

import csv
import io
import json

import pycountry
import pytest

COUNTRY_MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "Alpha-2 code,alpha_2,varchar(2),strip,,false,\n"
    "Alpha-3 code,alpha_3,varchar(3),strip,,false,\n"
    "Numeric code,numeric_code,varchar(3),strip,,false,\n"
    "Name,name,varchar(128),strip,,false,\n"
)
HEADER = ["Alpha-2 code", "Alpha-3 code", "Numeric code", "Name"]


def countries(header: list[str], extra: str | None = None) -> str:
    """ISO 3166-1 from pycountry as a vendor's CSV; `extra` adds a column (the region)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header + ([extra] if extra else []))
    for c in pycountry.countries:
        row = [c.alpha_2, c.alpha_3, c.numeric, c.name]
        writer.writerow(row + (["Earth"] if extra else []))
    return out.getvalue()


COUNT = len(pycountry.countries)


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_two_columns_renamed_at_once_are_each_named_with_their_evidence(
    table_dir, write, run_cli, sql
):
    config = table_dir(COUNTRY_MAPPING, name="dim_country", primary_key=["alpha_2"])
    code, first = run_cli(config, write("countries.csv", countries(HEADER)))
    assert code == 0, first
    renamed = ["ISO2", "ISO3", "Numeric code", "Name"]
    code, summary = run_cli(config, write("countries_v2.csv", countries(renamed)))
    assert code == 2
    message = summary["error"]["message"]
    assert (
        f"column 'Alpha-2 code' is missing; new column 'ISO2' matches its values in "
        f"{COUNT} of {COUNT} rows; column 'Alpha-3 code' is missing; new column 'ISO3' "
        f"matches its values in {COUNT} of {COUNT} rows" in message
    )
    assert f"init SOURCE --update {config}" in message
    # Nothing published, the run recorded as failed.
    assert sql("SELECT COUNT(*) FROM ref.dim_country") == [(COUNT,)]
    assert sql(
        "SELECT status, error_type FROM etl_audit.run_log WHERE run_id = ?", summary["run_id"]
    ) == [("failed", "RejectedInput")]


def test_a_rename_plus_a_new_column_names_the_rename_and_the_unmatched_column(
    table_dir, write, run_cli, sql
):
    config = table_dir(COUNTRY_MAPPING, name="dim_country", primary_key=["alpha_2"])
    assert run_cli(config, write("countries.csv", countries(HEADER)))[0] == 0
    # The name column renamed to a name nothing like it: only its values tell.
    renamed = ["Alpha-2 code", "Alpha-3 code", "Numeric code", "Short title"]
    source = write("v2.csv", countries(renamed, extra="Region"))
    code, summary = run_cli(config, source)
    assert code == 2
    assert summary["error"]["message"].startswith(
        f"{source}, line 1, column 'Name': column 'Name' is missing; new column 'Short title' "
        f"matches its values in {COUNT} of {COUNT} rows; new column 'Region' matches no "
        "missing column; header: Alpha-2 code, Alpha-3 code, Numeric code, Short title, Region"
    )
    assert sql("SELECT COUNT(*) FROM ref.dim_country") == [(COUNT,)]


def test_on_s3_the_values_come_from_the_newest_curated_object(s3, table_dir, warehouse_url, capsys):
    from handler.cli import main
    from tests.conftest import run_args

    config = table_dir(COUNTRY_MAPPING, name="dim_country", primary_key=["alpha_2"])
    s3.put_object(Bucket="raw", Key="country/2026-11-01/c.csv", Body=countries(HEADER).encode())
    renamed = countries(["ISO2", "Alpha-3 code", "Numeric code", "Name"])
    s3.put_object(Bucket="raw", Key="country/2026-11-02/c.csv", Body=renamed.encode())

    def run(key: str) -> tuple[int, dict]:
        capsys.readouterr()
        args = run_args(config, f"s3://raw/{key}", warehouse_url, "--json")
        code = main([*args, "--curated-root", "s3://curated"])
        return code, json.loads(capsys.readouterr().out)

    assert run("country/2026-11-01/c.csv")[0] == 0
    code, summary = run("country/2026-11-02/c.csv")
    assert code == 2
    assert (
        f"column 'Alpha-2 code' is missing; new column 'ISO2' matches its values in {COUNT} "
        f"of {COUNT} rows"
    ) in summary["error"]["message"]
