"""refload's one Lambda entry point: `handler.lambda_handler(event, context)`."""

import os

# pyarrow imports numpy, whose OpenBLAS starts a thread per core that spins while idle;
# refload never uses BLAS, and on two cores the spinning took ~15% of a small run's CPU.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from handler.dispatch import STEPS, lambda_handler

__all__ = ["STEPS", "lambda_handler"]
