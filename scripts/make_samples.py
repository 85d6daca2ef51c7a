"""Regenerate the shipped sample tables from real data (the `zipcodes` and `pycountry` packages).

The outputs are committed; run this only to refresh them:
    .venv/bin/python scripts/make_samples.py
Each file is shaped like a real vendor feed (preamble lines, odd delimiters,
cp1252, numbers where codes should be, duplicate rows) so the demo shows
refload doing its job.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import openpyxl
import pycountry
import zipcodes

from steps.shared.mapping.sheet import SHEET_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "samples" / "raw"
MAPPINGS = ROOT / "configs" / "mappings"
DAY = "2026-11-01"


def write_csv(rows: list[list[str]], delimiter: str = ",") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return out.getvalue()


def write_mapping_xlsx(path: Path, rows: list[list[str]]) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "mapping"
    for row in rows:
        sheet.append(row)
    book.save(path)


def write_mapping_csv(path: Path, rows: list[list[str]]) -> None:
    path.write_text(write_csv(rows), encoding="utf-8")


HEADER = list(SHEET_COLUMNS)
AUDIT_COLUMNS = [
    ["", "load_date", "date", "", "{load_date}", "false", ""],
    ["", "run_id", "varchar(64)", "", "{run_id}", "false", ""],
    ["", "source_key", "varchar(512)", "", "{source_key}", "false", ""],
]


def zipcode() -> None:
    rows = [["zip", "type", "active", "city", "state", "county", "timezone", "lat", "long"]]
    for z in zipcodes.list_all():
        rows.append(
            [
                z["zip_code"],
                z["zip_code_type"],
                str(z["active"]).upper(),
                z["city"],
                z["state"],
                z["county"],
                z["timezone"],
                z["lat"],
                z["long"],
            ]
        )
    folder = RAW / "zipcode" / DAY
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "us_zipcodes.csv").write_text(write_csv(rows), encoding="utf-8")
    write_mapping_xlsx(
        MAPPINGS / "zipcode_mapping.xlsx",
        [
            HEADER,
            ["zip", "zipcode", "varchar(5)", "strip|zfill(5)", "", "false", ""],
            ["type", "zip_type", "varchar(16)", "strip|upper", "", "true", ""],
            ["active", "is_active", "boolean", "strip", "true", "false", ""],
            ["city", "city", "varchar(64)", "strip|title", "", "false", ""],
            ["state", "state", "varchar(2)", "strip|upper", "", "false", ""],
            ["county", "county", "varchar(64)", "strip|nullif(N/A)", "", "true", ""],
            ["timezone", "timezone", "varchar(40)", "strip", "", "true", ""],
            ["lat", "latitude", "decimal(9,4)", "strip", "", "true", ""],
            ["long", "longitude", "decimal(9,4)", "strip", "", "true", ""],
            *AUDIT_COLUMNS,
        ],
    )


def country() -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "ISO 3166-1"
    sheet.append([f"ISO 3166-1 country codes, exported {DAY}"])
    sheet.append(["Alpha-2", "Alpha-3", "Numeric", "Short name", "Official name"])
    for c in sorted(pycountry.countries, key=lambda c: c.alpha_2):
        # Spreadsheets turn "004" into the number 4: zfill(3) in the mapping recovers it.
        sheet.append(
            [c.alpha_2, c.alpha_3, int(c.numeric), c.name, getattr(c, "official_name", None)]
        )
    folder = RAW / "country" / DAY
    folder.mkdir(parents=True, exist_ok=True)
    book.save(folder / "iso3166_countries.xlsx")
    write_mapping_xlsx(
        MAPPINGS / "country_mapping.xlsx",
        [
            HEADER,
            ["Alpha-2", "alpha_2", "varchar(2)", "strip|upper", "", "false", ""],
            ["Alpha-3", "alpha_3", "varchar(3)", "strip|upper", "", "false", ""],
            ["Numeric", "numeric_code", "varchar(3)", "strip|zfill(3)", "", "false", ""],
            ["Short name", "name", "varchar(128)", "strip", "", "false", ""],
            ["Official name", "official_name", "varchar(256)", "strip", "", "true", ""],
            *AUDIT_COLUMNS,
        ],
    )


def currency() -> None:
    rows = [["Alphabetic code", "Numeric code", "Currency"]]
    for c in sorted(pycountry.currencies, key=lambda c: c.alpha_3):
        rows.append([c.alpha_3, c.numeric, c.name])
    rows += rows[1:4]  # the vendor feed repeats a few rows: dedupe drops them
    text = "ISO 4217 currency list;;\n" + write_csv(rows, delimiter=";")
    folder = RAW / "currency" / DAY
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "iso4217.csv").write_bytes(text.encode("cp1252"))
    write_mapping_csv(
        MAPPINGS / "currency_mapping.csv",
        [
            HEADER,
            ["Alphabetic code", "currency_code", "varchar(3)", "strip|upper", "", "false", ""],
            ["Numeric code", "numeric_code", "varchar(3)", "strip|zfill(3)", "", "false", ""],
            ["Currency", "name", "varchar(128)", "strip", "", "false", ""],
            *AUDIT_COLUMNS,
        ],
    )


def subdivision() -> None:
    rows = [["code", "country", "name", "category", "parent"]]
    for s in sorted(pycountry.subdivisions, key=lambda s: s.code):
        rows.append([s.code, s.country_code, s.name, s.type, s.parent_code or ""])
    folder = RAW / "subdivision" / DAY
    folder.mkdir(parents=True, exist_ok=True)
    data = ("\ufeff" + write_csv(rows, delimiter="|")).encode("utf-8")
    (folder / "iso3166_2.psv.gz").write_bytes(gzip.compress(data, mtime=0))
    write_mapping_csv(
        MAPPINGS / "subdivision_mapping.csv",
        [
            HEADER,
            ["code", "subdivision_code", "varchar(8)", "strip|upper", "", "false", ""],
            ["country", "country_code", "varchar(2)", "strip|upper", "", "false", ""],
            ["name", "name", "varchar(256)", "strip", "", "false", ""],
            ["category", "category", "varchar(64)", "strip|lower", "", "true", ""],
            ["parent", "parent_code", "varchar(8)", "strip|upper", "", "true", ""],
            *AUDIT_COLUMNS,
        ],
    )


if __name__ == "__main__":
    MAPPINGS.mkdir(parents=True, exist_ok=True)
    for make in (zipcode, country, currency, subdivision):
        make()
        print(f"wrote {make.__name__}")
