"""The flake hunt: run the tests marked `processes` (those that start processes, servers or a
browser; tests/conftest.py checks the mark) many times, and count the passes of each.

    .venv/bin/python tests/flakes.py --runs 20 [-- PYTEST_ARGS...]      (make flakes RUNS=20)

Each round is one pytest session over every marked test, so a test meets the others' leftovers as
it would in `make test`. Prints "passes/runs" per test, the failures' first lines, and exits 1 if
any test failed in any round.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROUND_TIMEOUT = 3600  # seconds: a round that hangs is a finding too, not a hunt that never ends


def one_round(report: Path, extra: list[str]) -> dict[str, str | None]:
    """Each test's outcome in one pytest session: None for a pass, else the failure's first line."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "processes", "-p", "no:cacheprovider"]
    try:
        subprocess.run(
            [*command, f"--junitxml={report}", *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=ROUND_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return {"(the round)": f"did not end within {ROUND_TIMEOUT} s"}
    if not report.is_file():
        return {"(the round)": "pytest wrote no report (it could not start?)"}
    outcomes: dict[str, str | None] = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        problems = [e for e in case if e.tag in ("failure", "error")]
        if any(e.tag == "skipped" for e in case):
            continue
        outcomes[name] = (problems[0].get("message") or problems[0].tag).splitlines()[0][:200] if problems else None
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args()
    passes: collections.Counter[str] = collections.Counter()
    runs: collections.Counter[str] = collections.Counter()
    failures: dict[str, list[str]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as folder:
        for number in range(1, args.runs + 1):
            start = time.perf_counter()
            outcomes = one_round(Path(folder) / f"round-{number}.xml", args.pytest_args)
            for name, problem in outcomes.items():
                runs[name] += 1
                if problem is None:
                    passes[name] += 1
                else:
                    failures[name].append(f"round {number}: {problem}")
            failed = [name for name, problem in outcomes.items() if problem is not None]
            seconds = time.perf_counter() - start
            print(f"round {number}/{args.runs}: {len(outcomes)} tests, {len(failed)} failed, {seconds:.0f}s")
            for name in failed:
                print(f"    failed: {name}: {outcomes[name]}")
            sys.stdout.flush()
    width = max(map(len, runs), default=0)
    for name in sorted(runs):
        print(f"{name:{width}s}  {passes[name]}/{runs[name]}")
        for line in failures.get(name, []):
            print(f"    {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
