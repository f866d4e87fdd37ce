"""Trials trained as one computation (``stack: K``, `sweep run --stack K`).

A worker asks Optuna for up to K trials at once (ask and tell), groups those whose configs share what
members must share (the weights' shapes, the data and the batch plan: `digitsum.members`), and trains
each group's members, every trial's seeds, in one `digitsum.train.fit`. Each trial is a `TrialRun` as
the objective's: it reports its own value every epoch, and the pruner decides for it alone. A pruned
trial is told at once and leaves the stack, and the others go on: the stack shrinks rather than take
in a new trial, because a newcomer would start at epoch 1 beside members at epoch e, at another point
of its learning-rate schedule and with another end, which one epoch loop cannot hold. Each trial's
record, value, checkpoint and curves are what its own run gives (within float rounding; on the fused
path bit for bit).
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread  # Optuna's own, as study.optimize uses it
from optuna.trial import TrialState

from digitsum.config import Config, as_flat, schema
from digitsum.members import SHARED_EXEMPT
from digitsum.train import EpochResult, FitResult, TrainingDiverged, fit
from sweep.run.trial import TrialContext, TrialRun
from sweep.store.records import write_trial


def batch_plan(config: Config) -> tuple[tuple[str, Any], ...]:
    """What the members of one stack share: every config key but those members may differ in."""
    keys = schema()
    return tuple((k, v) for k, v in as_flat(config).items() if not keys[k].member and k not in SHARED_EXEMPT)


@dataclass(frozen=True)
class Ending:
    """How a stacked trial ended: its state, its values where it completed, why where it failed."""

    trial: optuna.Trial
    state: TrialState
    values: tuple[float, ...] | None = None
    error: BaseException | None = None


End = Callable[[Ending], None]  # tells Optuna, as each trial ends


def run_stack(study: optuna.Study, trials: list[optuna.Trial], context: TrialContext, end: End) -> None:
    """Train these asked trials, a stack per batch plan, each with its heartbeat; ``end`` hears how each
    ended, pruned trials as they are pruned. On Ctrl-C every open trial ends as failed and interrupted
    (queued again by the worker), and the KeyboardInterrupt goes on."""
    ended: set[int] = set()

    def once(ending: Ending) -> None:
        ended.add(ending.trial.number)
        end(ending)

    with contextlib.ExitStack() as beats:
        for trial in trials:
            beats.enter_context(heartbeat(study, trial))
        try:
            groups: dict[tuple[tuple[str, Any], ...], list[TrialRun]] = defaultdict(list)
            for trial in trials:
                run = begin(trial, context, once)
                if run is not None:
                    groups[batch_plan(run.config)].append(run)
            for group in groups.values():
                _train_group(group, context, once)
        except KeyboardInterrupt as stopped:
            for trial in trials:
                if trial.number not in ended:
                    once(Ending(trial, TrialState.FAIL, error=stopped))
            raise


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """The trial's heartbeat while it trains (where the storage keeps them), as study.optimize gives one."""
    thread = get_heartbeat_thread(trial._trial_id, study._storage)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def begin(trial: optuna.Trial, context: TrialContext, end: End) -> TrialRun | None:
    try:
        return TrialRun(trial, context)
    except Exception as error:  # a config the search space should not give, a lost storage
        end(Ending(trial, TrialState.FAIL, error=error))
        return None


def _train_group(runs: list[TrialRun], context: TrialContext, end: End) -> None:
    """One stack: the runs' members in one fit; a pruned or diverged trial ends and leaves it at once."""
    members = [m for run in runs for m in run.members]
    owner = [index for index, run in enumerate(runs) for _ in run.members]
    gone: set[int] = set()
    with contextlib.ExitStack() as logs:
        events = [log for run in runs for log in logs.enter_context(run.events())]
        probe = context.probe if any(run.scored_probe(events) is not None for run in runs) else None
        try:
            fits = fit(
                members, _dispatch(runs, owner, gone, end), probe, events, raise_diverged=False, stop=context.stop
            )
        except KeyboardInterrupt:
            for index, run in enumerate(runs):
                if index not in gone:
                    run.interrupted()
            raise
        except Exception as error:  # the stack failed: none of its open trials finished
            for index, run in enumerate(runs):
                if index not in gone:
                    run.ending = "failed"
                    end(Ending(run.trial, TrialState.FAIL, error=error))
            return
    for index, run in enumerate(runs):
        if index not in gone:
            end(finished(run, [f for f, o in zip(fits, owner, strict=True) if o == index]))


def _dispatch(
    runs: list[TrialRun], owner: list[int], gone: set[int], end: End
) -> Callable[[list[EpochResult]], Collection[int]]:
    """The stack's on_epoch: each trial hears its own seeds' results; those pruned (or diverged) end, and
    their members leave. Ctrl-C (a KeyboardInterrupt from a trial's reporter) ends them all."""

    def on_epoch(results: list[EpochResult]) -> Collection[int]:
        by_run: dict[int, list[EpochResult]] = defaultdict(list)
        for result in results:
            by_run[owner[result.member]].append(result)
        leaving: set[int] = set()
        for index, heard in by_run.items():
            run = runs[index]
            try:
                bad = next((r for r in heard if not math.isfinite(r.train_loss)), None)
                if bad is not None:
                    raise run.diverged(TrainingDiverged(f"training loss is {bad.train_loss} at epoch {bad.epoch}"))
                run.hear(heard)
            except optuna.TrialPruned:
                run.ending = "pruned"
                gone.add(index)
                leaving |= {k for k, o in enumerate(owner) if o == index}
                end(Ending(run.trial, TrialState.PRUNED))
        return leaving

    return on_epoch


def finished(run: TrialRun, fits: list[FitResult]) -> Ending:
    """A trial that trained to its end: recorded and measured, on its own seeds' fits."""
    try:
        return Ending(run.trial, TrialState.COMPLETE, run.finish(fits))
    except Exception as error:  # a checkpoint that cannot be stored (a full disk), a lost storage
        return Ending(run.trial, TrialState.FAIL, error=error)


def fail_reason(trial: optuna.Trial, error: BaseException) -> None:
    """Keep why a trial failed on it (Optuna stores a FAIL without the reason)."""
    write_trial(trial, fail_reason=f"{type(error).__name__}: {' '.join(str(error).split())[:300]}")
