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
sys.exit(code)
