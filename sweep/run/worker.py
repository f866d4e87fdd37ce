"""One worker: start trials on the study until its budget is taken, riding out storage outages.

Workers use Optuna's own distributed mode: each process (on this machine or another) loads the
same study from the same storage and runs `study.optimize` one trial at a time, within the study's
budget (`sweep.run.budget`); a worker with nothing to start fails stale trials (dead workers) and
waits, so their retries still run.

Each process keeps a `Ledger` of the study's trials, read incrementally: the checks before, at the
start and at the end of a trial, the checkpoint clean-up and the monitor cost the same at the
10,000th trial as at the first (bench/bench_scale.py).
"""

from __future__ import annotations

import contextlib
import datetime
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from digitsum.train import warm_up
from sweep.run.budget import Step, budgeted, enqueue_balanced, mark_surplus, next_step, over_budget, room
from sweep.run.failures import DiskFull, FailureCount, requeue
from sweep.run.ledger import Ledger
from sweep.run.pbt import run_population
from sweep.run.plan import RunPlan
from sweep.run.signals import Signals, stop_on_signals
from sweep.run.stack import Ending, fail_reason, run_stack
from sweep.run.trial import make_objective, trial_context, worker_id
from sweep.spec.model import Keep
from sweep.store.artifacts import open_store, remove
from sweep.store.records import TrialRecord
from sweep.store.storage import close_storage, is_full, open_storage, storage_error

POLL_SECONDS = 0.5  # a worker with nothing to start polls this often for retries or the end
# Between trials a worker reads the study at most this often. Deciding to start a trial on an older
# view is safe: a trial numbered past the budget reads afresh before it trains (see over_budget),
# and the end and waiting are only decided on a fresh read. Trials of a second or more read each time.
READ_EVERY_SECONDS = 1.0


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


class _Settle:
    """After each of this worker's trials, from one ledger read: count failures in a row, and keep
    only the best trial's checkpoint (the Pareto set's) where the spec says so.

    Not study.optimize callbacks: Optuna reads the finished trial again (six statements) and deep-
    copies it for those. A trial stores its checkpoint only if it enters the best set as its worker
    last read it (sweep.run.trial); a worker removes the checkpoints of the trials its ledger saw
    leave the best set or fail, and of its own that turned out not best. A trial that stops being
    best is removed by every worker that saw it best (removing a missing artifact is a no-op).
    """

    def __init__(self, ledger: Ledger, store: Any | None) -> None:
        self.ledger = ledger
        self.store = store  # None: every checkpoint is kept
        self.mine: set[int] = set()  # this worker's trials, started and not settled yet
        self.failures = FailureCount()

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


def work(
    plan: RunPlan,
    stop: threading.Event,
    worker: int = 0,
    deadline: float | None = None,
    storage: optuna.storages.BaseStorage | None = None,
) -> None:
    """One worker: start trials until the study's budget is taken, the deadline passes or ``stop`` is set.
    On its own storage (closed at the end), or on ``storage``, which the caller closes.

    Ctrl-C or SIGTERM (`sweep.run.signals`) sets ``stop``: the running trials are failed and queued
    again, and `Stopped` says which."""
    # No preloading of torch._dynamo (~2.5 s): torch.optim's optimizers import it on first use, but
    # training's own (digitsum.optim.MemberAdamW) never does.
    own = storage is None
    storage = open_storage(plan.storage_url) if storage is None else storage
    try:
        with _quiet_storage_errors_in_threads(), stop_on_signals(stop) as signals:
            _run_trials(plan, stop, worker, deadline, storage, signals)
    finally:
        if own:
            close_storage(storage)


def _run_trials(
    plan: RunPlan,
    stop: threading.Event,
    worker: int,
    deadline: float | None,
    storage: optuna.storages.BaseStorage,
    signals: Signals,
) -> None:
    loop = _TrialLoop(plan, stop, worker, deadline, storage)
    outage = _Outage(plan.patience, storage)
    while True:
        try:
            if stop.is_set():
                raise KeyboardInterrupt
            finished = loop.step()
        except KeyboardInterrupt:
            raise signals.stopped(_requeue_interrupted(loop.study)) from None
        except DiskFull as error:
            requeue(loop.study, error.trial)
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
        self.ledger = ledger = Ledger(self.study, plan.spec.balance.key if plan.spec.balance else None, plan.spec.stop)
        ledger.refresh()
        ledger.take_done()  # a resumed study's history was settled when it happened
        ledger.take_unneeded()
        self.study.sampler = plan.spec.make_sampler(worker, ledger.final + len(ledger.open_trials()))
        warm_up(plan.spec.model_types(), plan.threads_per_worker)  # one-off costs stay out of trial timings
        keep_best = plan.spec.keep_checkpoints is Keep.BEST
        keep = ledger.would_be_best if keep_best else None
        device = "cuda:0" if plan.devices else None  # the one GPU its CUDA_VISIBLE_DEVICES shows (sweep.run.devices)
        self.context = trial_context(
            plan.spec, plan.artifacts, stop, plan.threads_per_worker, keep, plan.tensorboard, device
        )
        objective = make_objective(self.context)
        self.settle = _Settle(ledger, open_store(plan.artifacts) if keep_best else None)
        self.full: int | None = None  # the id of a trial that could not store its checkpoint: the disk is full
        self.guarded = budgeted(objective, plan.n_trials, ledger, self.settle.mine.add, self._failed)
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # the monitor prints one line per trial
        self.adopted: set[int] = set()
        # balancing and the stop rule count on a fresh read
        self.max_age = 0.0 if plan.spec.balance or plan.spec.stop else READ_EVERY_SECONDS

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
        if plan.spec.pbt is not None:
            self._stack(plan.spec.pbt.population, run_population)
        elif plan.stack > 1:
            self._stack(plan.stack, run_stack)
        else:
            if plan.spec.balance is not None:
                enqueue_balanced(self.study, plan.spec.balance, ledger)
            self.study.optimize(self.guarded, n_trials=1, catch=(Exception,))
        if self.full is not None:
            raise DiskFull(self.study._storage.get_trial(self.full))
        # grid and bruteforce call study.stop() once every combination is tried; Optuna keeps no public flag
        return self.study._stop_flag

    def _stack(self, size: int, train: Callable[..., None]) -> None:
        """Ask for up to ``size`` trials within the budget and ``train`` them at once: a stack of trials
        (sweep.run.stack) or a pbt population (sweep.run.pbt)."""
        plan, ledger, study = self.plan, self.ledger, self.study
        optuna.storages.fail_stale_trials(study)  # as study.optimize does before each trial
        ledger.refresh()
        free = room(ledger, plan.n_trials, self.settle.mine)
        if plan.spec.pbt is not None and free < size and ledger.open_trials(TrialState.RUNNING):
            # a killed population's trials go stale one by one: wait for all of its retries, so that it
            # resumes whole from its saved state (sweep.run.pbt) rather than start again in parts
            time.sleep(POLL_SECONDS)
            return
        trials = []
        for _ in range(max(1, min(size, free))):
            if plan.spec.balance is not None:
                ledger.refresh()  # the choices this worker just asked for count
                enqueue_balanced(study, plan.spec.balance, ledger)
            with warnings.catch_warnings():  # the stack gives each trial its heartbeat itself (sweep.run.stack)
                warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
                trial = study.ask()
            self.settle.mine.add(trial.number)
            if over_budget(ledger, trial.number, plan.n_trials):
                mark_surplus(trial)
                study.tell(trial, state=TrialState.FAIL)
                continue
            trials.append(trial)
        train(study, trials, self.context, self._end)

    def _end(self, ending: Ending) -> None:
        """Tell Optuna how a stacked trial ended; past the budget (a retry seen since), as surplus."""
        trial, state, error = ending.trial, ending.state, ending.error
        if state is not TrialState.FAIL and over_budget(self.ledger, trial.number, self.plan.n_trials):
            mark_surplus(trial)
            state = TrialState.FAIL
        if error is not None and not isinstance(error, KeyboardInterrupt):
            fail_reason(trial, error)
            if isinstance(error, Exception):
                self._failed(trial, error)
        try:
            if state is TrialState.COMPLETE and ending.values is not None:
                values = ending.values
                self.study.tell(trial, values[0] if len(values) == 1 else list(values))
            else:
                self.study.tell(trial, state=state)
        except RuntimeError as error:  # told (the state is stored first); the sampler asked to stop
            if "Study.stop" not in str(error):
                raise
            self.study._stop_flag = True  # grid and bruteforce stop once every combination is tried

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
        self.storage = storage  # its heartbeats say when it last answered (sweep.store.storage._RDBStorage)
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


def _requeue_interrupted(study: optuna.Study) -> list[int]:
    """Queue this worker's stopped trials (Ctrl-C, SIGTERM) again with their parameters, as a killed
    worker's trial is (Optuna's retry, so the budget counts it in its original's place); their numbers.
    Only the worker that ran a trial queues it, so no two workers queue the same one."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    queued = []
    for trial in _interrupted(trials, {worker_id()}):
        if trial.number not in retried:
            requeue(study, trial)
            queued.append(trial.number)
    return queued


def requeued_by(study: optuna.Study, workers: set[str]) -> list[int]:
    """The trials these workers (`worker_id`) stopped and queued again: what a parent reports of its own."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    return [t.number for t in _interrupted(trials, workers) if t.number in retried]


def _interrupted(trials: list[FrozenTrial], workers: set[str]) -> Iterator[FrozenTrial]:
    for trial in trials:
        record = TrialRecord.read(trial)
        if trial.state == TrialState.FAIL and record.interrupted and record.worker in workers:
            yield trial
