import gc
import os
import sys

from handler.cli import main

try:
    code = main()
    sys.stdout.flush()  # a reader that went away shows here, not at the exit's own flush
except BrokenPipeError:
    # The reader of stdout went away (`history | head`): stop quietly, as `ls` does. The
    # exit would flush stdout again and report the error: point it at /dev/null first.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 1
# Everything the run wrote is closed and flushed. What is left goes with the process,
# without a last garbage collection of every module's objects: 0.1 s of each exit. Not
# once DuckDB is loaded: its bindings (nanobind) take what is left uncollected at exit for
# leaks, and print some thirty lines about them on stderr.
if "duckdb" not in sys.modules:
    gc.freeze()
sys.exit(code)
