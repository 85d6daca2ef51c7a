"""refload's one Lambda entry point: `handler.lambda_handler(event, context)`."""

import os

# Where numpy is installed (not in the image), pyarrow imports it, and OpenBLAS starts a
# thread per core that spins while idle: ~15% of a small run's CPU on two cores, unused.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Arrow's allocator (mimalloc) hands freed memory back to the OS after 10 ms, and a run
# frees and takes it again between phases: in a Firecracker VM (Lambda, these machines)
# each page taken again is a fault. Kept for 1 s, a 1M-row run takes 1.4 s instead of
# 1.8 s; the peak is the same order (ADR 16). Read when pyarrow loads, so set here first.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "1000")

from handler.dispatch import STEPS, lambda_handler

__all__ = ["STEPS", "lambda_handler"]
