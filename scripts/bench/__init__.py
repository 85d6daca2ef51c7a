"""The benchmark's parts, by job (scripts/benchmark.py is the entry point and the driver)."""

from pathlib import Path

# The repository (handler, steps, tests): the children run there.
ROOT = Path(__file__).resolve().parent.parent.parent
