"""Load the shipped sample tables end to end on the embedded default and print a summary.

    .venv/bin/python scripts/run_samples.py [--warehouse URL] [--curated-root DIR]

Runs `python -m handler run` once per sample table (countries before
subdivisions: the subdivision table's referential-integrity test needs them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["zipcode", "country", "currency", "subdivision"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warehouse", default=f"duckdb:///{ROOT / 'refload.duckdb'}")
    parser.add_argument("--curated-root", default=str(ROOT / "curated"))
    parser.add_argument("--outbox", default=str(ROOT / "outbox"))
    args = parser.parse_args()
    worst = 0
    print(f"warehouse: {args.warehouse}\n")
    for name in ORDER:
        source = next((ROOT / "samples" / "raw" / name).glob("*/*"))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "handler",
                "run",
                "--config",
                str(ROOT / "configs" / f"dim_{name}.json"),
                "--source",
                str(source),
                "--warehouse",
                args.warehouse,
                "--curated-root",
                args.curated_root,
                "--outbox",
                args.outbox,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        print(done.stdout.rstrip())
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
        worst = max(worst, done.returncode)
    path = args.warehouse.removeprefix("duckdb:///")
    print(
        f"\nQuery it:  .venv/bin/python -c \"import duckdb; print(duckdb.connect('{path}')"
        ".sql('SELECT * FROM public.dim_zipcode LIMIT 5'))\""
    )
    print(
        f"Its runs:  .venv/bin/python -m handler history dim_zipcode --warehouse {args.warehouse}"
    )
    return worst


if __name__ == "__main__":
    sys.exit(main())
