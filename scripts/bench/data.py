"""The benchmark's data: the ZIP-like table (its mapping, config and generated rows) and
the country table of the --redshift run."""

from __future__ import annotations

from pathlib import Path

MAPPING = """source_column,target_column,data_type,transform,default,nullable,format
zip,zipcode,varchar(5),strip|zfill(5),,false,
plus4,plus4,varchar(4),strip|zfill(4),,false,
city,city,varchar(64),strip|title,,false,
state,state,varchar(2),strip|upper,,false,
lat,latitude,"decimal(9,4)",strip,,true,
long,longitude,double,strip,,true,
population,population,integer,strip,,true,
effective,effective_date,date,strip,,true,%m/%d/%Y
active,is_active,boolean,strip,,true,
"""
CONFIG = {
    "table_name": "bench_zip",
    "redshift_schema": "public",
    "mapping_file": "mapping.csv",
    "truncate_before_load": True,
    "primary_key": ["zipcode", "plus4"],
    "quality_tests": [
        {"type": "row_count_match", "tolerance_pct": 0},
        {"type": "uniqueness", "columns": ["zipcode", "plus4"]},
        {"type": "not_null", "columns": ["zipcode", "plus4", "city"]},
    ],
}
CITIES = [
    "SPRINGFIELD",
    "NEW YORK",
    "SAN JOSE",
    "ST. LOUIS",
    "LOS ANGELES",
    "FARGO",
    "SALT LAKE CITY",
    "BATON ROUGE",
    "EL PASO",
    "ANN ARBOR",
    "O'FALLON",
    "HOLTSVILLE",
]
STATES = ["ny", "ca", "tx", "mo", "nd", "ut", "la", "mi", "il", "ma", "wa", "fl"]


def generate(rows: int, path: Path, all_bad: bool = False) -> None:
    """ZIP-like rows: unique (zip, plus4) keys with leading zeros, plus 1% exact duplicates.
    `all_bad`: every row's latitude is not a number, so every row is rejected."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(42)
    unique = rows - rows // 100
    ids = np.arange(unique)
    ids = np.concatenate([ids, rng.choice(ids, rows - unique)])  # the duplicates
    rng.shuffle(ids)
    zip_ = pc.utf8_lpad(pa.array(ids % 100_000).cast(pa.string()), 5, "0")
    plus4 = pc.utf8_lpad(pa.array(ids // 100_000).cast(pa.string()), 4, "0")
    city = pa.array(np.array([f" {c} " for c in CITIES])[ids % len(CITIES)])
    state = pa.array(np.array(STATES)[(ids // 7) % len(STATES)])
    lat = pa.array(np.round(18 + (ids % 9973) / 9973 * 50, 4)).cast(pa.string())
    if all_bad:
        lat = pc.binary_join_element_wise("x", lat, "")
    lon = pa.array(np.round(-160 + (ids % 7919) / 7919 * 90, 6)).cast(pa.string())
    population = pa.array(ids % 120_000).cast(pa.string())
    day = 1 + ids % 28
    month = 1 + (ids // 28) % 12
    year = 1990 + ids % 35
    effective = pa.array([f"{m:02d}/{d:02d}/{y}" for m, d, y in zip(month, day, year, strict=True)])
    active = pa.array(np.where(ids % 10 == 0, "N", "Y"))
    table = pa.table(
        {
            "zip": zip_,
            "plus4": plus4,
            "city": city,
            "state": state,
            "lat": lat,
            "long": lon,
            "population": population,
            "effective": effective,
            "active": active,
        }
    )
    pacsv.write_csv(table, path)


# --redshift: one small table's run on the Redshift dialect, each statement held as a
# leader node tens of milliseconds away holds it (the tests' proxy onto PostgreSQL).
COUNTRY_MAPPING = """source_column,target_column,data_type,transform,default,nullable,format
alpha_2,alpha_2,varchar(2),strip|upper,,false,
alpha_3,alpha_3,varchar(3),strip|upper,,false,
numeric_code,numeric_code,varchar(3),strip|zfill(3),,false,
name,name,varchar(100),strip,,false,
"""
# A replace table with a primary key and five checks, as the shipped dim_country has.
COUNTRY_CONFIG = {
    "table_name": "bench_country",
    "redshift_schema": "public",
    "mapping_file": "mapping.csv",
    "truncate_before_load": True,
    "primary_key": ["alpha_2"],
    "quality_tests": [
        {"type": "row_count_between", "min": 240, "max": 260},
        {"type": "uniqueness", "columns": ["alpha_3"]},
        {"type": "not_null", "columns": ["alpha_2", "alpha_3", "numeric_code", "name"]},
        {"type": "regex", "column": "alpha_2", "pattern": "^[A-Z]{2}$"},
        {"type": "regex", "column": "numeric_code", "pattern": "^[0-9]{3}$"},
    ],
}
COUNTRY_ROWS = 249


def generate_countries(path: Path, edition: int = 1) -> None:
    """249 country-like rows: unique two- and three-letter codes, a numeric code, a name
    (every tenth name differs from one edition to the next)."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    lines = ["alpha_2,alpha_3,numeric_code,name"]
    for i in range(COUNTRY_ROWS):
        a, b = letters[i // 26], letters[i % 26]
        name = f"Country {a}{b}" + (f" ({edition})" if i % 10 == 0 else "")
        lines.append(f"{a}{b},{a}{b}{letters[i % 7]},{i + 4:03d},{name}")
    path.write_text("\n".join(lines) + "\n")


def next_night(path: Path, out: Path, every: int = 100) -> None:
    """The next night's file: the same rows, each key's population one more for 1 key in
    `every` (all copies of a row alike, so exact duplicates stay exact)."""
    import zlib

    with path.open() as rows, out.open("w") as changed:
        changed.write(rows.readline())
        for line in rows:
            fields = line.rstrip("\n").split(",")
            if zlib.crc32((fields[0] + fields[1]).encode()) % every == 7:
                population = int(fields[6].strip('"') or 0) + 1
                fields[6] = f'"{population}"'
                line = ",".join(fields) + "\n"
            changed.write(line)
