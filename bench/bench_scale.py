"""Cost per trial at scale: our sweep layer vs Optuna's bare loop, block by block of trials.

    .venv/bin/python bench/bench_scale.py [--trials 10000] [--pg-trials 2000] [--pg-workers 8] [--quick]

Two set-ups, each run twice in the same process, ours then bare, on a fresh storage each:
* SQLite, one worker, ``--trials`` tiny trials (lengths 1-2, hidden 8, one epoch, random sampler).
* PostgreSQL (a throwaway local server), ``--pg-workers`` worker processes, ``--pg-trials`` in all.

*Ours* is `sweep run`'s own code (`sweep.run.plan.plan_run` + `sweep.run.launch.run_study`, monitor included)
training real tiny models. *Bare* is `study.optimize` on the same storage, sampler and pruner, with
an objective that trains nothing but writes what one of our trials wrote (the same parameters,
reports and user attributes, copied from a finished trial of ours) and keeps the CPU busy for as
long as our trials trained (their median train_seconds): with more workers than cores, both loops
then compete for the cores alike.

The overhead per trial is the gap between a trial's end and the same worker's next trial's start:
the work a sweep layer does between trials. A trial's own duration is shown too (ours trains; its
growth over blocks is the layer's in-trial work). Statements per trial come from SQLAlchemy's
events (SQLite, this process: worker and monitor) and from pg_stat_statements (PostgreSQL, every
process). Targets: the last block within 1.3x of the first; ours within 1.5x of bare.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

SPEC = """
name: scale
n_trials: {trials}
data: {{lengths: [1, 2], val_fraction: 0.2}}
fixed: {{train.n_epochs: 1, train.seed: 0, model.hidden_size: 8, train.num_threads: 1}}
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
space:
  model.model_type: {{choices: [lstm, gru]}}
  train.learning_rate: {{low: 1.0e-3, high: 1.0e-2, log: true}}
  train.batch_size: {{choices: [16, 32, 64]}}
"""
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TARGET_GROWTH = 1.3
TARGET_VS_BARE = 1.5


class StatementCount:
    """SQL statements executed by every SQLAlchemy engine of this process."""

    def __init__(self) -> None:
        self.count = 0
        event.listen(Engine, "before_cursor_execute", self._one)

    def _one(self, *_: Any) -> None:
        self.count += 1


def ours(
    spec_path: Path, url: str, trials: int, workers: int, folder: Path, counter: StatementCount
) -> tuple[optuna.Study, list[tuple[int, int]]]:
    """Run our layer; also returns the monitor's marks: (trials seen, statements so far) per trial."""
    from sweep.run.launch import run_study
    from sweep.run.plan import RunOptions
    from sweep.run.plan import plan_run as prepare

    marks: list[tuple[int, int]] = []
    options = RunOptions(
        storage=url, trials=trials, workers=workers, threads=1, artifacts=str(folder / "ckpt"), oversubscribe=True
    )
    plan, _ = prepare(spec_path, options)
    run_study(plan, lambda trial, best: marks.append((len(marks) + 1, counter.count)))
    return optuna.load_study(study_name=plan.study_name, storage=url), marks


def bare_worker(url: str, spec_path: str, n_trials: int, template: dict[str, Any]) -> None:
    """One process of the bare loop: Optuna's study.optimize with a trivial objective."""
    from sweep.spec import load_spec
    from sweep.store.storage import open_storage

    spec = load_spec(spec_path)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url)  # the same storage settings as ours: WAL, heartbeats, retry callback
    study = optuna.load_study(
        study_name="bare", storage=storage, sampler=spec.make_sampler(), pruner=spec.make_pruner()
    )
    me = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: optuna.Trial) -> float:
        spec.suggest(trial)
        until = time.perf_counter() + template["busy"]
        while time.perf_counter() < until:  # the CPU our trial spent training
            pass
        for step, value in template["intermediate"]:
            trial.report(value, step)
            trial.should_prune()
        for key, value in template["user_attrs"].items():
            trial.set_user_attr(key, me if key == "worker" else value)
        return template["value"]

    study.optimize(objective, n_trials=n_trials)


def bare(url: str, spec_path: Path, trials: int, workers: int, template: dict[str, Any]) -> optuna.Study:
    from sweep.spec import load_spec

    spec = load_spec(spec_path)
    optuna.create_study(storage=url, study_name="bare", directions=[g.direction.value for g in spec.goals])
    shares = [trials // workers + (i < trials % workers) for i in range(workers)]
    if workers == 1:
        bare_worker(url, str(spec_path), trials, template)
    else:
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=bare_worker, args=(url, str(spec_path), n, template)) for n in shares]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    return optuna.load_study(study_name="bare", storage=url)


def template_of(study: optuna.Study) -> dict[str, Any]:
    """What one finished trial of ours wrote (reports, user attributes, value) and how long ours trained."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trial = complete[-1]
    return {
        "busy": statistics.median(t.user_attrs["train_seconds"] for t in complete),
        "intermediate": sorted(trial.intermediate_values.items()),
        "user_attrs": dict(trial.user_attrs),
        "value": trial.value,
    }


def gaps_by_block(study: optuna.Study, block: int) -> dict[int, dict[str, list[float]]]:
    """Per block of trial numbers: each finished trial's duration and the gap to its worker's next
    trial (ms). Trials numbered past the budget (surplus ones, retries) go to the last block."""
    last_block = (len(study.get_trials(deepcopy=False, states=FINISHED)) - 1) // block
    by_worker: dict[str, list[FrozenTrial]] = defaultdict(list)
    for trial in study.get_trials(deepcopy=False):
        if trial.datetime_start and trial.datetime_complete:
            by_worker[str(trial.user_attrs.get("worker"))].append(trial)
    blocks: dict[int, dict[str, list[float]]] = defaultdict(lambda: {"gap": [], "trial": []})
    for trials in by_worker.values():
        trials.sort(key=lambda t: t.datetime_start)
        for this, after in itertools.pairwise(trials):
            if this.state not in FINISHED:
                continue
            row = blocks[min(this.number // block, last_block)]
            row["gap"].append((after.datetime_start - this.datetime_complete).total_seconds() * 1000)
            row["trial"].append((this.datetime_complete - this.datetime_start).total_seconds() * 1000)
    return dict(sorted(blocks.items()))


def statements_by_block(marks: list[tuple[int, int]], block: int) -> dict[int, float]:
    """Statements per trial in each block, from the monitor's marks (trials seen, statements so far)."""
    rates = {}
    for index in range(len(marks) // block):
        first, last = marks[index * block], marks[min(len(marks), (index + 1) * block) - 1]
        if last[0] > first[0]:
            rates[index] = (last[1] - first[1]) / (last[0] - first[0])
    return rates


def print_table(
    title: str, ours_study: optuna.Study, bare_study: optuna.Study, block: int, marks: list[tuple[int, int]]
) -> list[str]:
    """The block table; returns the targets missed."""
    mine, theirs = gaps_by_block(ours_study, block), gaps_by_block(bare_study, block)
    statements = statements_by_block(marks, block)
    print(f"\n{title}: medians per block of {block:,} trials (ms)")
    print(
        f"{'trials':>13s} {'ours gap':>9s} {'bare gap':>9s} {'ours/bare':>9s} {'ours trial':>10s} {'bare trial':>10s}"
        + (f" {'stmts/trial':>11s}" if statements else "")
    )
    for index, row in mine.items():
        other = theirs.get(index, {"gap": [float("nan")], "trial": [float("nan")]})
        gap, bare_gap = statistics.median(row["gap"]), statistics.median(other["gap"])
        span = f"{index * block + 1:,}-{(index + 1) * block:,}"
        line = (
            f"{span:>13s} {gap:9.1f} {bare_gap:9.1f} {gap / bare_gap:8.2f}x "
            f"{statistics.median(row['trial']):10.1f} {statistics.median(other['trial']):10.1f}"
        )
        if index in statements:
            line += f" {statements[index]:11.1f}"
        print(line)
    return _missed(title, mine, theirs)


def _missed(title: str, mine: dict, theirs: dict) -> list[str]:
    first, last = min(mine), max(mine)
    missed = []
    for what in ("gap", "trial"):
        growth = statistics.median(mine[last][what]) / statistics.median(mine[first][what])
        print(f"  ours, last block / first block, {what}: {growth:.2f}x (target <= {TARGET_GROWTH}x)")
        if growth > TARGET_GROWTH:
            missed.append(f"{title}: {what} grew {growth:.2f}x")
    all_mine = statistics.median([g for row in mine.values() for g in row["gap"]])
    all_bare = statistics.median([g for row in theirs.values() for g in row["gap"]])
    print(
        f"  gap over all trials: ours {all_mine:.1f} ms, bare {all_bare:.1f} ms: "
        f"{all_mine / all_bare:.2f}x (target <= {TARGET_VS_BARE}x)"
    )
    if all_mine / all_bare > TARGET_VS_BARE:
        missed.append(f"{title}: ours/bare {all_mine / all_bare:.2f}x")
    return missed


def sqlite_case(folder: Path, trials: int, block: int, counter: StatementCount) -> list[str]:
    spec_path = folder / "scale.yaml"
    spec_path.write_text(SPEC.format(trials=trials))
    url = f"sqlite:///{folder}/ours.db"
    start, before = time.perf_counter(), counter.count
    mine, marks = ours(spec_path, url, trials, 1, folder, counter)
    mine_seconds, mine_statements = time.perf_counter() - start, counter.count - before
    bare_url = f"sqlite:///{folder}/bare.db"
    start, before = time.perf_counter(), counter.count
    theirs = bare(bare_url, spec_path, trials, 1, template_of(mine))
    bare_seconds, bare_statements = time.perf_counter() - start, counter.count - before
    missed = print_table(f"SQLite, 1 worker, {trials:,} trials", mine, theirs, block, marks)
    print(
        f"  statements per trial: ours {mine_statements / trials:.1f} (worker and monitor), "
        f"bare {bare_statements / trials:.1f}; wall: ours {mine_seconds:.0f}s, bare {bare_seconds:.0f}s"
    )
    return missed


def postgres_case(folder: Path, trials: int, workers: int, block: int, counter: StatementCount) -> list[str]:
    from pg_server import postgres_server, why_unavailable

    if why_unavailable():
        print(f"\nPostgreSQL case skipped: {why_unavailable()}")
        return []
    spec_path = folder / "scale-pg.yaml"
    spec_path.write_text(SPEC.format(trials=trials))
    with postgres_server(options="-c shared_preload_libraries=pg_stat_statements") as server:
        server.sql("CREATE EXTENSION pg_stat_statements")
        start, before = time.perf_counter(), server.statements()
        mine, _ = ours(spec_path, server.url, trials, workers, folder, counter)
        mine_seconds, mine_statements = time.perf_counter() - start, server.statements() - before
        start, before = time.perf_counter(), server.statements()
        theirs = bare(server.url, spec_path, trials, workers, template_of(mine))
        bare_seconds, bare_statements = time.perf_counter() - start, server.statements() - before
        missed = print_table(f"PostgreSQL, {workers} workers, {trials:,} trials", mine, theirs, block, [])
        print(
            f"  statements per trial (pg_stat_statements, every process): ours {mine_statements / trials:.1f}, "
            f"bare {bare_statements / trials:.1f}; wall: ours {mine_seconds:.0f}s, bare {bare_seconds:.0f}s"
        )
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000, help="SQLite trials (one worker)")
    parser.add_argument("--pg-trials", type=int, default=2_000, help="PostgreSQL trials, over all workers")
    parser.add_argument("--pg-workers", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="1,000 SQLite and 400 PostgreSQL trials")
    args = parser.parse_args()
    trials, pg_trials = (1_000, 400) if args.quick else (args.trials, args.pg_trials)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    counter = StatementCount()
    with tempfile.TemporaryDirectory() as tmp:
        missed = sqlite_case(Path(tmp), trials, max(1, trials // 10), counter)
        missed += postgres_case(Path(tmp), pg_trials, args.pg_workers, max(1, pg_trials // 4), counter)
    print("\nall targets met" if not missed else "\ntargets missed: " + "; ".join(missed))


if __name__ == "__main__":
    main()
