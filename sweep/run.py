"""Run a study: one or many worker processes on one Optuna storage, and a monitor that prints.

Workers use Optuna's own distributed mode: each process (on this machine or another) loads the
same study from the same storage and runs `study.optimize` one trial at a time. What we add:

* `--trials N` is the study's total of finished (complete or pruned) trials, whichever worker ran
  them. Before each trial a worker fails stale trials (dead workers), then counts the trials that
  are finished, running or waiting. A trial that was asked for when the budget was already taken
  (two workers asking at the same instant) is failed at once and marked ``surplus``.
* Workers that find no trial left to start wait for the running ones, so a trial of a worker that
  dies is still retried (after the heartbeat grace period) and the total stays exact.

Each process keeps a `Ledger` of the study's trials, read incrementally: the checks before, at the
start and at the end of a trial, the checkpoint clean-up and the monitor cost the same at the
10,000th trial as at the first (bench/bench_scale.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from typing import Any

import optuna
import optuna_dashboard
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from digitsum.errors import UsageError, one_line, warning_line
from digitsum.train import warm_up
from sweep.artifacts import open_store, remove
from sweep.ledger import Ledger, best_trial, feasible, place
from sweep.objective import make_objective
from sweep.records import StudyMeta, TrialRecord, write_artifacts, write_fingerprint, write_trial
from sweep.spec import Keep, Param, SpecError, StudySpec
from sweep.storage import (
    MAX_RETRY,
    close_storage,
    is_full,
    open_storage,
    patience_seconds,
    storage_error,
    study_names,
)

POLL_SECONDS = 0.5  # a worker with nothing to start polls this often for retries or the end
# Between trials a worker reads the study at most this often. Deciding to start a trial on an older
# view is safe: a trial numbered past the budget reads afresh before it trains (see _over_budget),
# and the end and waiting are only decided on a fresh read. Trials of a second or more read each time.
READ_EVERY_SECONDS = 1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunPlan:
    spec: StudySpec
    storage_url: str | None
    study_name: str
    n_trials: int
    timeout: float | None
    workers: int
    artifacts: str  # the artifact store's location (sweep.artifacts)
    threads: int | None = None  # torch threads per worker; None: this machine's cores / workers
    # seconds a worker waits for a storage that stopped answering; read (and checked) when the plan is made
    patience: float = dataclasses.field(default_factory=patience_seconds)

    @property
    def threads_per_worker(self) -> int:
        # More torch threads than cores, summed over processes, slowed epochs 5-18x here.
        return self.threads or max(1, available_cores() // self.workers)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def prepare_study(spec: StudySpec, storage: optuna.storages.BaseStorage, name: str, artifacts: str) -> optuna.Study:
    """Create the study, or resume it if the stored one was made by the same search space; a new
    study records `artifacts`, its artifact store's location (so does one made before artifacts)."""
    existed = name in study_names(storage)
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=[goal.direction.value for goal in spec.goals],
        load_if_exists=True,
        sampler=spec.make_sampler(),
        pruner=spec.make_pruner(),
    )
    stored = StudyMeta.read(study).fingerprint
    if existed and stored is not None and not spec.matches(stored):
        raise SpecError(
            f"{spec.path}: study {name!r} in this storage was made with another metric, data or search space; "
            f"run with --name NEW_NAME to start a new study (the stored one is kept)"
        )
    if stored is None:
        # Enough to re-train any trial (`sweep rerun`) without the spec file.
        StudyMeta(
            fingerprint=spec.fingerprint(),
            spec_path=spec.path,
            description=spec.description,
            metric=spec.goals[0].metric.value,
            value_from=spec.value_from.value,
            base_config=spec.base.to_dict(),
            probe=spec.probe,
            target=spec.target,
            objectives=[goal.to_dict() for goal in spec.goals] if spec.objectives else None,
            constraints=[c.to_dict() for c in spec.constraints],
            artifacts=artifacts,
        ).write(study)
        study.set_metric_names([goal.metric.value for goal in spec.goals])
        optuna_dashboard.save_note(study, spec_note(spec))
    elif not stored.startswith("v2:"):  # made before fingerprints came from the validated spec
        write_fingerprint(study, spec.fingerprint())
    if stored is not None and StudyMeta.read(study).artifacts is None:  # made before artifacts
        write_artifacts(study, artifacts)
    return study


def spec_note(spec: StudySpec) -> str:
    """The study's note in optuna-dashboard: which spec made it, and how to go on."""
    return (
        f"## {spec.name}\n\nMade by `sweep run {spec.path}`. {spec.description}\n\n"
        f"- objectives: {', '.join(f'`{g.metric}` ({g.direction})' for g in spec.goals)}; "
        f"accuracies are taken at each trial's {spec.value_from} epoch\n"
        + (f"- constraints: {', '.join(c.name for c in spec.constraints)}\n" if spec.constraints else "")
        + f"- sampler: `{spec.sampler['type']}`, pruner: `{spec.pruner['type']}`\n"
        f"- report: `sweep report {spec.name}`; best trial: `sweep best {spec.name}`\n"
    )


class Step(enum.Enum):
    """What a worker does next."""

    RUN = "run"  # start a trial
    WAIT = "wait"  # others' trials may still need a retry
    DONE = "done"  # the budget is finished


def next_step(ledger: Ledger, n_trials: int, mine: Collection[int] = ()) -> Step:
    """What to do next, by the ledger as last read and the trials this worker started since (`mine`):
    they are claimed whether the ledger saw them or not, and none of them is waiting any more."""
    if ledger.finished >= n_trials:
        return Step.DONE
    unseen = sum(not ledger.knows(number) for number in mine)
    waiting = sum(t.number not in mine for t in ledger.open_trials(TrialState.WAITING))
    if waiting or ledger.claimed + unseen < n_trials:
        return Step.RUN
    return Step.WAIT


def _adopt_orphans(ledger: Ledger, storage: optuna.storages.BaseStorage, adopted: set[int]) -> None:
    """Give a heartbeat to RUNNING trials that never recorded one, so they can go stale.

    Optuna only fails trials whose heartbeat went silent; a trial whose worker died (or lost the
    database) before its first heartbeat would stay RUNNING forever and the study would never
    reach its total. Each worker records one heartbeat per such trial, once: a live trial's own
    thread keeps it fresh, a dead one is failed and retried a grace period later.
    """
    if not isinstance(storage, optuna.storages.RDBStorage) or not storage.heartbeat_interval:
        return  # a journal file, or a storage opened without heartbeats
    silence = (storage.grace_period or 0) + storage.heartbeat_interval  # as the storage was opened
    old_enough = datetime.datetime.now() - datetime.timedelta(seconds=silence)
    for trial in ledger.open_trials(TrialState.RUNNING):
        if trial.number not in adopted and trial.datetime_start and trial.datetime_start < old_enough:
            # Optuna's own write, which raises where ours only misses a beat: adopted only once it is stored
            optuna.storages.RDBStorage.record_heartbeat(storage, trial._trial_id)
            adopted.add(trial.number)


class _Surplus(Exception):
    """The study's budget was already taken when this trial was asked for."""


MAX_CONSECUTIVE_FAILURES = 5


class TrialsKeepFailing(RuntimeError):
    """Several trials in a row failed: something is wrong with the spec or the machine."""


class DiskFull(TrialsKeepFailing):  # a TrialsKeepFailing: a worker process reports it the same way
    """A trial could not store its checkpoint: the disk is full. Waiting will not mend it, and every
    next trial would fail the same way, so the run stops; the trial is queued again for the resume."""

    def __init__(self, trial: FrozenTrial) -> None:
        self.trial = trial
        reason = TrialRecord.read(trial).fail_reason
        again = " (the trial runs again first)" if _retries_left(trial) else ""
        super().__init__(
            f"trial {trial.number} could not store its checkpoint ({reason}); free some space, then run the same "
            f"command again to resume{again}"
        )


def _retries_left(trial: FrozenTrial) -> bool:
    """Would Optuna's retry callback queue this trial again (it stops after MAX_RETRY retries)?"""
    return len(RetryHeartbeatStaleTrialCallback.retry_history(trial)) < MAX_RETRY


def _requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial again with its parameters, as a killed worker's is (Optuna's retry)."""
    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def _over_budget(ledger: Ledger, number: int, n_trials: int) -> bool:
    """True if `n_trials` claimed trials stand before trial `number` (never true for a retry)."""
    if number < n_trials:
        return False  # each place before it holds at most one claimed trial: nothing to read
    ledger.refresh()
    me = ledger.open_trial(number)
    if me is None or place(me) != number:
        return False  # a retry replaces a trial that was already counted
    return ledger.claimed_before(number) >= n_trials


TrialValues = float | tuple[float, ...]


def _budgeted(
    objective: Callable[[optuna.Trial], TrialValues],
    n_trials: int,
    ledger: Ledger,
    started: Callable[[int], None] = lambda number: None,
    failed: Callable[[optuna.Trial, Exception], None] = lambda trial, error: None,
) -> Callable[[optuna.Trial], TrialValues]:
    """Run `objective` only within the study's budget, and keep the reason of any failure.

    The budget is checked when the trial starts and again when it ends: failing a stale trial and
    queueing its retry are two writes, and a worker that counted between them can start a trial
    too many; by its end the retry is visible and the extra trial is failed as surplus.
    """

    def surplus(trial: optuna.Trial) -> _Surplus:
        write_trial(trial, surplus=True)
        return _Surplus(f"the study already has {n_trials} trials")

    def guarded(trial: optuna.Trial) -> TrialValues:
        started(trial.number)
        if _over_budget(ledger, trial.number, n_trials):
            raise surplus(trial)
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            if _over_budget(ledger, trial.number, n_trials):
                raise surplus(trial) from None
            raise
        except KeyboardInterrupt:
            raise
        except Exception as error:  # Optuna stores a FAIL without the reason; keep it on the trial
            write_trial(trial, fail_reason=f"{type(error).__name__}: {' '.join(str(error).split())[:300]}")
            failed(trial, error)
            raise
        if _over_budget(ledger, trial.number, n_trials):
            raise surplus(trial)
        return value

    return guarded


def _enqueue_balanced(study: optuna.Study, param: Param, ledger: Ledger) -> None:
    """Queue the least-tried choice of `param` (equal budgets per model type); the sampler fills in the rest."""
    if ledger.waiting:
        return  # a queued trial (a retry, or another worker's pick) goes first
    counts = ledger.choice_counts()
    choices = list(param.choices or ())
    choice = min(choices, key=lambda c: (counts[c], choices.index(c)))
    study.enqueue_trial({param.key: choice})


def best_numbers(study: optuna.Study) -> set[int]:
    """The best trial's number, or the Pareto set's with several objectives (feasible trials only)."""
    try:
        if len(study.directions) > 1:
            return {t.number for t in study.best_trials}
        return {best_trial(study).number}
    except ValueError:  # nothing complete (or feasible) yet
        return set()


class _Settle:
    """After each of this worker's trials, from one ledger read: count failures in a row, and keep
    only the best trial's checkpoint (the Pareto set's) where the spec says so.

    Not study.optimize callbacks: Optuna reads the finished trial again (six statements) and deep-
    copies it for those. A trial stores its checkpoint only if it enters the best set as its worker
    last read it (sweep.objective); a worker removes the checkpoints of the trials its ledger saw
    leave the best set or fail, and of its own that turned out not best. A trial that stops being
    best is removed by every worker that saw it best (removing a missing artifact is a no-op).
    """

    def __init__(self, ledger: Ledger, store: Any | None) -> None:
        self.ledger = ledger
        self.store = store  # None: every checkpoint is kept
        self.mine: set[int] = set()  # this worker's trials, started and not settled yet
        self.failures = _FailureCount()

    def __call__(self, max_age: float = 0.0) -> None:
        """Settle what finished since the last read; nothing when the ledger was read under `max_age` ago."""
        if time.monotonic() - self.ledger.read_at < max_age:
            return
        self.ledger.refresh()
        done = self.ledger.take_done()  # those seen by the budget checks' reads too
        own = [t for t in done if t.number in self.mine]
        self.mine.difference_update(t.number for t in own)
        for trial in own:
            self.failures.add(trial)
        unneeded = self.ledger.take_unneeded()  # taken either way: the list would only grow
        if self.store is not None:
            for trial in unneeded + [t for t in own if t.number not in self.ledger.best]:
                remove(self.store, TrialRecord.read(trial))
        self.failures.check()


@contextlib.contextmanager
def _quiet_storage_errors_in_threads() -> Iterator[None]:
    """Optuna's heartbeat thread dies with a traceback when the database goes away; the worker
    itself meets the same error and reports it in one line. The previous hook is restored."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if storage_error(args.exc_value) is None:
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


@contextlib.contextmanager
def _ctrl_c_stops(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C: set ``stop``; the running trial ends at its next epoch boundary (failed, nothing
    stays RUNNING). Raising from the handler could land inside library callbacks that swallow it.
    Second Ctrl-C: an immediate KeyboardInterrupt. The previous handler is restored at the end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def work(
    plan: RunPlan,
    stop: threading.Event,
    worker: int = 0,
    deadline: float | None = None,
    storage: optuna.storages.BaseStorage | None = None,
) -> None:
    """One worker: start trials until the study's budget is taken, the deadline passes or ``stop`` is set.
    On its own storage (closed at the end), or on ``storage``, which the caller closes."""
    # No preloading of torch._dynamo (~2.5 s): torch.optim's optimizers import it on first use, but
    # the fused step's FusedAdamW (LSTM and GRU on the CPU) never does; other trials pay it once.
    own = storage is None
    storage = open_storage(plan.storage_url) if storage is None else storage
    try:
        with _quiet_storage_errors_in_threads(), _ctrl_c_stops(stop):
            _run_trials(plan, stop, worker, deadline, storage)
    finally:
        if own:
            close_storage(storage)


def _run_trials(
    plan: RunPlan, stop: threading.Event, worker: int, deadline: float | None, storage: optuna.storages.BaseStorage
) -> None:
    loop = _TrialLoop(plan, stop, worker, deadline, storage)
    outage = _Outage(plan.patience, storage)
    while True:
        if stop.is_set():
            raise KeyboardInterrupt
        try:
            finished = loop.step()
        except KeyboardInterrupt:
            _requeue_interrupted(loop.study)
            raise
        except DiskFull as error:
            _requeue(loop.study, error.trial)
            raise
        except Exception as error:
            outage.ride(error)  # waits out a storage that stopped answering, or raises
            continue
        outage.over()
        if finished:
            return


class _TrialLoop:
    """One worker's view of the study and what it needs to start trials: the ledger, the objective
    within the budget, the clean-up of checkpoints. `step` starts one trial, waits, or says it is done."""

    def __init__(
        self,
        plan: RunPlan,
        stop: threading.Event,
        worker: int,
        deadline: float | None,
        storage: optuna.storages.BaseStorage,
    ) -> None:
        self.plan, self.deadline, self.storage = plan, deadline, storage
        self.study = optuna.load_study(study_name=plan.study_name, storage=storage, pruner=plan.spec.make_pruner())
        self.ledger = ledger = Ledger(self.study, plan.spec.balance.key if plan.spec.balance else None)
        ledger.refresh()
        ledger.take_done()  # a resumed study's history was settled when it happened
        ledger.take_unneeded()
        self.study.sampler = plan.spec.make_sampler(worker, ledger.final + len(ledger.open_trials()))
        warm_up(plan.spec.model_types(), plan.threads_per_worker)  # one-off costs stay out of trial timings
        keep_best = plan.spec.keep_checkpoints is Keep.BEST
        keep = ledger.would_be_best if keep_best else None
        objective = make_objective(plan.spec, plan.artifacts, stop, plan.threads_per_worker, keep)
        self.settle = _Settle(ledger, open_store(plan.artifacts) if keep_best else None)
        self.full: int | None = None  # the id of a trial that could not store its checkpoint: the disk is full
        self.guarded = _budgeted(objective, plan.n_trials, ledger, self.settle.mine.add, self._failed)
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # the monitor prints one line per trial
        self.adopted: set[int] = set()
        self.max_age = 0.0 if plan.spec.balance else READ_EVERY_SECONDS  # balancing counts on a fresh read

    def step(self) -> bool:
        """Start one trial, or wait a moment for others' to end; True once there is nothing left to do."""
        plan, ledger, settle = self.plan, self.ledger, self.settle
        settle(self.max_age)
        step = next_step(ledger, plan.n_trials, settle.mine)
        out_of_time = self.deadline is not None and time.time() >= self.deadline
        if step is not Step.RUN or out_of_time:
            settle()  # a fresh read: this worker's last trials settled, and the step decided on it
            step = next_step(ledger, plan.n_trials, settle.mine)
        if out_of_time or step is Step.DONE:
            return True
        if step is Step.WAIT:
            optuna.storages.fail_stale_trials(self.study)  # before a run, study.optimize does it itself
            _adopt_orphans(ledger, self.storage, self.adopted)
            time.sleep(POLL_SECONDS)
            return False
        if plan.spec.balance is not None:
            _enqueue_balanced(self.study, plan.spec.balance, ledger)
        self.study.optimize(self.guarded, n_trials=1, catch=(Exception,))
        if self.full is not None:
            raise DiskFull(self.study._storage.get_trial(self.full))
        return False

    def _failed(self, trial: optuna.Trial, error: Exception) -> None:
        """A trial failed: note it if the disk was full (waiting will not mend that, and every next trial
        would fail the same way)."""
        if is_full(error):
            self.full = trial._trial_id


class _Outage:
    """The storage stopped answering (a database restarting, a lock held for a long time): wait for it,
    up to `patience` seconds without a step that succeeds, retrying once a second; then give up.

    The trial that was running is left to the stale-trial check: its heartbeat goes silent, and after
    the grace period a worker fails it and queues it again with its parameters, so the total stays
    exact. A full disk does not pass by itself: it ends the run at once."""

    def __init__(self, patience: float, storage: optuna.storages.BaseStorage | None = None) -> None:
        self.patience = patience
        self.storage = storage  # its heartbeats say when it last answered (sweep.storage._RDBStorage)
        self.since: float | None = None

    def ride(self, error: Exception) -> None:
        """Return once it is worth trying again (a second later); raise `error` if it is not a passing outage."""
        lost = storage_error(error)
        if lost is None:
            if _taken_over(error):
                return  # its trial was failed as stale during an outage, and is queued again: go on
            raise error
        now = time.monotonic()
        answered = getattr(self.storage, "answered_at", None)
        if self.since is None:
            self.since = now
        elif answered is not None and answered > self.since:
            self.since = answered  # a heartbeat went through since this outage began: a new one began after it
        if is_full(lost) or now - self.since > self.patience:
            raise error
        time.sleep(1.0)

    def over(self) -> None:
        """A step went through: the storage answers again."""
        self.since = None


def _taken_over(error: BaseException) -> bool:
    """Did another worker finish this worker's trial (failed as stale, while the storage was away)?
    Optuna then refuses the trial's report (UpdateFinishedTrialError) and its tell (ValueError)."""
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, optuna.exceptions.UpdateFinishedTrialError) or (
            isinstance(current, ValueError) and str(current).startswith("Cannot tell a ")
        ):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _requeue_interrupted(study: optuna.Study) -> None:
    """Queue this worker's Ctrl-C'd trials again with their parameters, as a killed worker's trial is
    (Optuna's retry, so the budget counts it in its original's place). Only the worker that ran a
    trial queues it, so no two workers queue the same one."""
    me = f"{socket.gethostname()}:{os.getpid()}"
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    for trial in trials:
        record = TrialRecord.read(trial)
        if (
            trial.state == TrialState.FAIL
            and record.interrupted
            and record.worker == me
            and trial.number not in retried
        ):
            _requeue(study, trial)


class _FailureCount:
    """Counts a worker's trials failing in a row (surplus trials aside)."""

    def __init__(self) -> None:
        self.failures: list[FrozenTrial] = []

    def add(self, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL and not TrialRecord.read(trial).surplus:
            self.failures.append(trial)
        else:
            self.failures.clear()

    def check(self) -> None:
        if len(self.failures) < MAX_CONSECUTIVE_FAILURES:
            return
        last = self.failures[-1]
        reason = TrialRecord.read(last).fail_reason or "see the trials' fail_reason"
        raise TrialsKeepFailing(
            f"{len(self.failures)} trials in a row failed (last: trial {last.number}, {reason}); "
            "fix the spec or the machine, then run again"
        )


class StorageLost(RuntimeError):
    """The storage stopped answering during a run; what it stored stays stored."""


def _worker_process(plan: RunPlan, worker: int, deadline: float | None) -> None:
    """A spawned worker: what `sweep` prints for worker 0 (one line per error or warning), it prints too."""
    code = 0
    warnings.showwarning = lambda message, category, *_, **__: print(warning_line(message, category), file=sys.stderr)
    try:
        work(plan, threading.Event(), worker, deadline)
    except KeyboardInterrupt:  # Optuna already marked the running trial failed
        pass
    except (TrialsKeepFailing, UsageError) as error:
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


def lost_message(error: Exception) -> str:
    reason = " ".join(str(getattr(error, "orig", None) or error).split())[:160]
    if is_full(error):
        return f"the storage's disk is full ({reason}); free some space, then run the same command again to resume"
    return f"lost the storage ({reason}); finished trials stay stored; run the same command again to resume"


def run_study(plan: RunPlan, on_trial: Callable[[FrozenTrial, float | None], None] | None = None) -> optuna.Study:
    """Run the plan's workers while a monitor thread reports trials.

    This process is worker 0: it has torch and optuna imported already and starts its first trial
    at once. Workers 1..K-1 are fresh processes (spawn, not fork: a forked child would inherit this
    process's database connections and torch threads), each paying a few seconds of imports.
    The monitor shares worker 0's storage: one connection pool per process (sweep.storage.POOL).
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
    helpers = [context.Process(target=_worker_process, args=(plan, i, deadline)) for i in range(1, plan.workers)]
    for process in helpers:
        process.start()
    thread = threading.Thread(target=monitor.watch, daemon=True)
    thread.start()
    try:
        _work_with_helpers(plan, helpers, deadline, storage)
    finally:
        monitor.stop.set()
        thread.join()
    failed = [p.exitcode for p in helpers if p.exitcode not in (0, None)]
    if failed:
        raise RuntimeError(
            f"{len(failed)} worker(s) failed (exit codes {failed}); run the same command again to resume"
        )
    return study


def _work_with_helpers(
    plan: RunPlan, helpers: list[Any], deadline: float | None, storage: optuna.storages.BaseStorage
) -> None:
    """Worker 0's share, then wait for the helpers (on a Ctrl-C, for at most 30 s)."""
    try:
        work(plan, threading.Event(), 0, deadline, storage)
        _join(helpers)
    except KeyboardInterrupt:
        _join(helpers, timeout=30)  # they got the same Ctrl-C; give them time to mark their trials
        raise
    except Exception as error:
        _join(helpers)  # they meet the same storage, or go on with their share of the budget
        lost = storage_error(error)
        if lost is None:
            raise
        raise StorageLost(lost_message(lost)) from None


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
        self.sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
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
