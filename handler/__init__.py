"""refload's one Lambda entry point: `handler.lambda_handler(event, context)`."""

import os
import sys

# Where numpy is installed (not in the image), pyarrow imports it, and OpenBLAS starts a
# thread per core that spins while idle: ~15% of a small run's CPU on two cores, unused.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

PR_SET_THP_DISABLE = 41  # linux/prctl.h


def _without_transparent_huge_pages() -> None:
    """A run allocates and frees large Arrow buffers phase after phase; with transparent
    huge pages the kernel zeroes (and compacts for) a 2 MB page at each first touch:
    16% of a 1M-row run's CPU here, and 1.94 s against 1.74 s (ADR 16). Off for this
    process only; REFLOAD_TRANSPARENT_HUGEPAGES=1 keeps the system's setting."""
    if sys.platform != "linux" or os.environ.get("REFLOAD_TRANSPARENT_HUGEPAGES") == "1":
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: nothing to turn off
        return


_without_transparent_huge_pages()

from handler.aws.dispatch import STEPS, lambda_handler  # noqa: E402

__all__ = ["STEPS", "lambda_handler"]
