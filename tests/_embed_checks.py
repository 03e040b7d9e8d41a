"""Checks shared by the single-process and the Ray embed tests."""

from __future__ import annotations

# (file name, content) with the same two rows in every input format; the tests prefix a UTF-8 BOM
BOM_INPUTS = [
    ("in.txt", "Hello there.\nBye.\n"),
    ("in.csv", "text,id\nHello there.,1\nBye.,2\n"),
    ("in.jsonl", '{"text": "Hello there."}\n{"text": "Bye."}\n'),
]

# a process that holds the output lock of ``sys.argv[1]`` until killed (prints "locked" once it does)
HOLD = """
import sys, time
from metaeol.output_lock import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def one_line_error(result, *fragments) -> str:
    """The CLI failed with a one-line message holding every fragment, and no traceback; the line."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
