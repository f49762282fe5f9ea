"""The subprocess executor's worker (`command(JOB.json)`, or `python -m rbench.worker.worker
JOB.json`): run a job's cells in this process. Each event is one JSON line on stdout; a cell's last line is its `done`
event, which carries the cell's outcome with its record (`CellOutcome.to_json`) for the parent
to store. Anything else that code prints goes to stderr, so it cannot be mistaken for an event.
The job file is removed once read. When the parent is gone (an event cannot be written), the
worker exits at once, recording nothing: the cell it was running stays pending."""

from __future__ import annotations

import json
import os
import sys


# `python -m` and `python -c` put the working directory first on the path, where a folder named
# `rbench` (a clone of the project) would shadow the installed package; this entry drops it
# before importing rbench (`python -P` does the same from Python 3.11 only).
_ENTRY = ("import sys\n"
          "if sys.path[:1] == ['']: del sys.path[0]\n"
          "from rbench.worker.worker import main\n"
          "sys.exit(main(sys.argv))\n")


def command(job_file: str) -> list[str]:
    """The command line of a worker process that runs the job in `job_file`, whatever the
    working directory holds."""
    return [sys.executable, "-c", _ENTRY, job_file]


def main(argv: list[str]) -> int:
    from .cells import Job
    from .jobs import keep_sigint_ignored, run_cells

    keep_sigint_ignored()
    events = sys.stdout
    sys.stdout = sys.stderr
    with open(argv[1]) as f:
        job = Job.from_json(json.load(f))
    os.unlink(argv[1])

    def emit(event: dict) -> None:
        try:
            events.write(json.dumps(event) + "\n")
            events.flush()
        except (BrokenPipeError, OSError):  # the parent died: nobody will read this cell's result
            os._exit(3)

    for outcome in run_cells(job, on_event=emit):
        emit({"event": "done", "key": outcome.cell.key, "status": outcome.status, "message": outcome.message,
              "outcome": outcome.to_json()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
