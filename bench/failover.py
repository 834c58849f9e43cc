"""Recovery from a failover, measured: runs the two failover tests `--repeat` times and prints, per fault,
the time to promotion, the time from the fault to the run's finish (`BrainClient.wait` returning) and
reconcile_runs' re-drives.

    PYTHONPATH=. .venv/bin/python bench/failover.py --repeat 3

The faults (tests/test_failover_redis.py, tests/test_failover_pg.py): the Redis master killed with
SIGKILL mid retrain and again mid nightly, Sentinel promoting the replica (down-after 1 s, quorum 2 of 3);
the PostgreSQL primary stopped with `pg_ctl stop -m immediate` mid retrain and its synchronous standby
promoted with `pg_ctl promote`.  Workload: two synthetic symbols, the baseline model, one 2-process worker.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_failover_redis.py::test_redis_master_killed_mid_retrain_and_mid_nightly",
         "tests/test_failover_pg.py::test_postgres_primary_stopped_mid_retrain_and_standby_promoted"]
LINE = re.compile(r"(?P<case>redis sentinel failover|postgres standby failover): run (?P<run>\w+), "
                  r"state (?P<state>\w+), promoted_s (?P<promoted>[\d.-]+), finished_s (?P<finished>[\d.-]+), "
                  r"redrives (?P<redrives>\d+), worker_restarts (?P<restarts>\d+)$")


def one_round() -> tuple[list[dict], bool, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", *TESTS, "-q", "-s", "-p", "no:cacheprovider"],
                          cwd=REPO, capture_output=True, text=True)
    # pytest -s puts a test's printed lines after the progress dots of the tests before it.
    rows = [m.groupdict() for m in map(LINE.search, proc.stdout.splitlines()) if m]
    if proc.returncode != 0:  # what failed, for the record (the figures of the passing test still count)
        errors = [line for line in proc.stdout.splitlines() if line.startswith(("E ", "FAILED"))]
        print("\n".join(f"    {line[:300]}" for line in errors[-12:]), flush=True)
    return rows, proc.returncode == 0, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    by_fault: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for i in range(args.repeat):
        rows, passed, seconds = one_round()
        print(f"round {i + 1}: {'passed' if passed else 'FAILED'} in {seconds:.0f} s", flush=True)
        for row in rows:
            print(f"  {row['case']}, {row['run']}: {row['state']}, promoted {row['promoted']} s, "
                  f"finished {row['finished']} s after the fault, re-drives {row['redrives']}, "
                  f"worker restarts {row['restarts']}")
            by_fault[(row["case"], row["run"])].append(row)
    print()
    # Every row is the attempt the Engine enqueued, finished in that attempt: no manual re-drive (that
    # would be a new attempt).  Re-drives are reconcile_runs' own.
    print(f"{'fault':<42} {'n':>2} {'promoted s (median)':>20} {'fault to finish s (min/median/max)':>36} "
          f"{'re-drives (max)':>16} {'worker restarts (sum)':>22}")
    for (case, run), rows in by_fault.items():
        finished = [float(r["finished"]) for r in rows if r["finished"] != "-"]
        promoted = [float(r["promoted"]) for r in rows if r["promoted"] != "-"]
        spread = (f"{min(finished):.1f} / {statistics.median(finished):.1f} / {max(finished):.1f}"
                  if finished else "no fault in this run")
        print(f"{case + ', ' + run:<42} {len(rows):>2} "
              f"{(f'{statistics.median(promoted):.1f}' if promoted else '-'):>20} {spread:>36} "
              f"{max(int(r['redrives']) for r in rows):>16} {sum(int(r['restarts']) for r in rows):>22}")


if __name__ == "__main__":
    main()
