"""refload's one Lambda entry point: `handler.lambda_handler(event, context)`."""

import os

# Where numpy is installed (not in the image), pyarrow imports it, and OpenBLAS starts a
# thread per core that spins while idle: ~15% of a small run's CPU on two cores, unused.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from handler.dispatch import STEPS, lambda_handler

__all__ = ["STEPS", "lambda_handler"]
