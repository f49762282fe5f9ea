"""The subprocess executor's worker (`command(JOB.json)`, or `python -m rbench.worker JOB.json`):
run a job's cells in this process. Each event is one JSON line on stdout; anything else that code prints goes
to stderr, so it cannot be mistaken for an event. The job file is removed once read. When the
parent is gone (an event cannot be written), the worker exits at once, recording nothing: the
cell it was running stays pending."""

from __future__ import annotations

import json
import os
import sys


# `python -m` and `python -c` put the working directory first on the path, where a folder named
# `rbench` (a clone of the project) would shadow the installed package; this entry drops it
# before importing rbench (`python -P` does the same from Python 3.11 only).
_ENTRY = ("import sys\n"
          "if sys.path[:1] == ['']: del sys.path[0]\n"
          "from rbench.worker import main\n"
          "sys.exit(main(sys.argv))\n")


def command(job_file: str) -> list[str]:
    """The command line of a worker process that runs the job in `job_file`, whatever the
    working directory holds."""
    return [sys.executable, "-c", _ENTRY, job_file]


def main(argv: list[str]) -> int:
    from .cells import Job
    from .engine import keep_sigint_ignored, run_cells

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

    for _ in run_cells(job, on_event=emit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
