"""Run a plan: worker 0 in this process, workers 1..K-1 as spawned processes, and a monitor thread
that reports each finished trial."""

from __future__ import annotations

import contextlib
import datetime
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from digitsum.errors import UsageError, one_line, warning_line
from sweep.run.devices import device_of, visible
from sweep.run.failures import RunFailed, StorageLost, WorkersFailed, lost_message
from sweep.run.ledger import FINISHED, Ledger
from sweep.run.plan import RunPlan
from sweep.run.signals import Signals, Stopped, stop_on_signals
from sweep.run.trial import worker_id
from sweep.run.worker import requeued_by, work
from sweep.spec.objectives import feasible, sign
from sweep.store.storage import close_storage, open_storage, storage_error


def _worker_process(plan: RunPlan, worker: int, deadline: float | None) -> None:
    """A spawned worker: what `sweep` prints for worker 0 (one line per error or warning), it prints too."""
    code = 0
    warnings.showwarning = lambda message, category, *_, **__: print(warning_line(message, category), file=sys.stderr)
    try:
        work(plan, threading.Event(), worker, deadline)
    except KeyboardInterrupt:  # Optuna already marked the running trial failed
        pass
    except (RunFailed, UsageError) as error:
        print(f"error: worker {worker}: {one_line(str(error))}", file=sys.stderr, flush=True)
        code = 1
    except Exception as error:
        lost = storage_error(error)
        if lost is None:
            raise
        print(f"error: worker {worker}: {one_line(lost_message(lost))}", file=sys.stderr, flush=True)
        code = 1
    # Skip the interpreter's teardown: with torch loaded it takes about a second, and nothing is
    # left to clean up (trials are stored, the storage is closed, output is flushed here).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_study(plan: RunPlan, on_trial: Callable[[FrozenTrial, float | None], None] | None = None) -> optuna.Study:
    """Run the plan's workers while a monitor thread reports trials.

    This process is worker 0: it has torch and optuna imported already and starts its first trial
    at once. Workers 1..K-1 are fresh processes (spawn, not fork: a forked child would inherit this
    process's database connections and torch threads), each paying a few seconds of imports.
    The monitor shares worker 0's storage: one connection pool per process (sweep.store.storage.POOL).
    """
    deadline = time.time() + plan.timeout if plan.timeout else None
    storage = open_storage(plan.storage_url)
    try:
        return _run_with_monitor(plan, storage, on_trial, deadline)
    finally:
        close_storage(storage)


def _run_with_monitor(
    plan: RunPlan,
    storage: optuna.storages.BaseStorage,
    on_trial: Callable[[FrozenTrial, float | None], None] | None,
    deadline: float | None,
) -> optuna.Study:
    study = optuna.load_study(study_name=plan.study_name, storage=storage)
    monitor = _Monitor(study, on_trial)
    context = multiprocessing.get_context("spawn")
    # on GPUs every worker is a process of its own, started with its device alone (sweep.run.devices)
    first = 0 if plan.devices else 1
    helpers = [context.Process(target=_worker_process, args=(plan, i, deadline)) for i in range(first, plan.workers)]
    stop = threading.Event()
    with stop_on_signals(stop, forward=lambda signum: _pass_on(helpers, signum)) as signals:
        for worker, process in enumerate(helpers, start=first):
            with _environment(visible(device_of(plan.devices, worker)) if plan.devices else {}):
                process.start()
        thread = threading.Thread(target=monitor.watch, daemon=True)
        thread.start()
        try:
            _work_with_helpers(plan, helpers, deadline, storage, signals)
        finally:
            monitor.stop.set()
            thread.join()
    # a helper that a SIGTERM reached before it could set its handler ended on it, with no trial to stop
    failed = [p.exitcode for p in helpers if p.exitcode not in (0, None, -signal.SIGTERM)]
    if failed:
        raise WorkersFailed(
            f"{len(failed)} worker(s) failed (exit codes {failed}); run the same command again to resume"
        )
    return study


def _work_with_helpers(
    plan: RunPlan, helpers: list[Any], deadline: float | None, storage: optuna.storages.BaseStorage, signals: Signals
) -> None:
    """Worker 0's share (on GPUs it is a helper too), then wait for the helpers (once stopped, for at most
    30 s). Stopped by a signal,
    raise `Stopped` with the trials that every worker queued again."""
    try:
        if not plan.devices:
            work(plan, signals.stop, 0, deadline, storage)
        _join(helpers)
    except KeyboardInterrupt as stopped:
        # they got the same Ctrl-C (the terminal signals the group) or the SIGTERM passed on to them;
        # give them time to mark their trials
        _join(helpers, timeout=30)
        own = stopped.requeued if isinstance(stopped, Stopped) else []
        raise signals.stopped(sorted(own + _requeued_by_helpers(plan, storage, helpers))) from None
    except Exception as error:
        _join(helpers)  # they meet the same storage, or go on with their share of the budget
        lost = storage_error(error)
        if lost is None:
            raise
        raise StorageLost(lost_message(lost)) from None
    if signals.stop.is_set():  # a signal while waiting for the helpers, after worker 0's share
        raise signals.stopped(_requeued_by_helpers(plan, storage, helpers))


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ while inside: a process started there inherits them."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _pass_on(helpers: list[Any], signum: int) -> None:
    """A SIGTERM to the parent (`kill`, a scheduler that signals one process) reaches its workers too."""
    for process in helpers:
        if process.pid is not None and process.exitcode is None:
            os.kill(process.pid, signum)


def _requeued_by_helpers(plan: RunPlan, storage: optuna.storages.BaseStorage, helpers: list[Any]) -> list[int]:
    workers = {worker_id(p.pid) for p in helpers if p.pid is not None}
    if not workers:
        return []
    return requeued_by(optuna.load_study(study_name=plan.study_name, storage=storage), workers)


def _join(processes: list[Any], timeout: float | None = None) -> None:
    end = None if timeout is None else time.monotonic() + timeout
    for process in processes:
        process.join(None if end is None else max(0.0, end - time.monotonic()))


class _Monitor:
    """Polls the storage and calls `on_trial` once for each trial that finished since the start, with
    the best value so far (one objective; several have a Pareto set, not a best value)."""

    def __init__(self, study: optuna.Study, on_trial: Callable[[FrozenTrial, float | None], None] | None) -> None:
        self.on_trial = on_trial
        self.stop = threading.Event()
        self.ledger = Ledger(study)
        self.ledger.refresh()
        self.ledger.take_done()  # finished before the start: not reported
        self.sign = sign(study.directions[0])
        self.best: float | None = None
        if len(study.directions) == 1 and self.ledger.best:
            self.best = next(iter(self.ledger.best.values())).values[0]

    def poll(self) -> None:
        self.ledger.refresh()
        for trial in sorted(self.ledger.take_done(), key=_completed_at):
            if self._better(trial):
                self.best = trial.values[0]
            if self.on_trial is not None:
                self.on_trial(trial, self.best)

    def _better(self, trial: FrozenTrial) -> bool:
        if len(self.ledger.directions) > 1 or trial.state != TrialState.COMPLETE or not feasible(trial):
            return False
        return self.best is None or self.sign * trial.values[0] > self.sign * self.best

    def watch(self) -> None:
        try:
            while not self.stop.wait(1.0):
                self._poll_through_outages()
            self._poll_through_outages()
        except Exception:  # a closed stdout, say: the monitor stops reporting, the workers go on as before
            pass

    def _poll_through_outages(self) -> None:
        try:
            self.poll()
        except Exception as error:
            if storage_error(error) is None:
                raise  # the storage is away: the workers wait for it, and so does the monitor


def _completed_at(trial: FrozenTrial) -> datetime.datetime:
    return trial.datetime_complete or datetime.datetime.max


def stop_reason(plan: RunPlan, study: optuna.Study) -> str | None:
    """Why a study ends short of its budget, in one line: the spec's stop rule, or a sampler that
    tried every combination of the space; None when neither holds."""
    ledger = Ledger(study, stop=plan.spec.stop)
    ledger.refresh()
    if ledger.finished >= plan.n_trials:
        return None
    if ledger.plateau is not None and ledger.plateau.reached:
        return ledger.plateau.reason(plan.spec.goals[0].metric.value)
    kind, size = plan.spec.sampler["type"], plan.spec.combinations()
    if kind in ("grid", "bruteforce") and size is not None and not ledger.open_trials():
        tried = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False, states=FINISHED)}
        if len(tried) >= size:
            return f"the {kind} sampler has tried all {size} combinations of the space"
    return None
