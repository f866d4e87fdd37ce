"""Population-based training on Optuna (``pbt:`` in a spec): the population, one trial per member,
trains as one stacked computation (`digitsum.train.fit`), and every ``interval`` epochs its bottom
quantile takes the weights and optimizer state of a member of its top quantile and goes on with
perturbed hyperparameters (`digitsum.pbt`, applied as a `digitsum.train.Exploit`).

Stored in the study like any trials, so the dashboard, `sweep best`, `report`, `export` and `ls` read
it. Each member is one trial:
- its Optuna params are the hyperparameters it started with (the sampler's first suggestion);
- it reports its own validation accuracy every epoch, and its value is its own;
- its record keeps ``schedule``, its hyperparameters at the start and at each change ([{epoch,
  params}]), and ``lineage``, whose weights it took at each exploit ([{epoch, from_trial}]).

A trial per member, rather than one trial for the whole population, keeps every figure and command
that reads trials working, and each member's curve is its own line in them.

Resumable: at every interval the population's whole state (`digitsum.fit_state`) goes to the artifact
store, and the study records it (StudyMeta.pbt_state). A killed or stopped population's trials are
failed and queued again with their parameters (as any dead worker's); when the worker asks for them,
the population goes on from that state: each retry gets its member's curve so far, schedule and
lineage, and training resumes at the next epoch, not at epoch 1.
"""

from __future__ import annotations

import contextlib
import math
import random
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from digitsum import config as cfg
from digitsum.fit_state import FitState, load_state, save_state
from digitsum.pbt import Range, exploit, explore
from digitsum.train import EpochResult, Exploit, epoch_results, fit
from sweep.run.stack import End, Ending, begin, finished, heartbeat
from sweep.run.trial import TrialContext, TrialRun
from sweep.spec.model import PBTRule, StudySpec
from sweep.spec.objectives import epoch_accuracy
from sweep.store.artifacts import download_state, remove_id, upload_state
from sweep.store.records import StudyMeta, TrialRecord, write_pbt_state, write_trial


def run_population(study: optuna.Study, trials: list[optuna.Trial], context: TrialContext, end: End) -> None:
    """Train these asked trials as one population; ``end`` hears how each ended. On Ctrl-C or SIGTERM
    every trial ends as failed and interrupted (queued again by the worker)."""
    spec = context.spec
    assert spec.pbt is not None, "a population needs the spec's pbt:"
    with contextlib.ExitStack() as beats:
        for trial in trials:
            beats.enter_context(heartbeat(study, trial))
        saved = StudyMeta.read(study).pbt_state
        trials = _in_member_order(study, trials, saved) or trials
        runs = [run for run in (begin(trial, context, end) for trial in trials) if run is not None]
        if not runs:
            return
        population = _Population(study, runs, spec, spec.pbt, context.store)
        resume = population.resume(saved) if saved is not None and len(runs) == len(saved["trials"]) else None
        with contextlib.ExitStack() as logs:
            events = [log for run in runs for log in logs.enter_context(run.events())]
            try:
                probe = context.probe if context.probe_each_epoch else None
                members = [run.members[0] for run in runs]
                every = spec.pbt.interval
                fits = fit(
                    members, population.on_epoch, probe, events, raise_diverged=False, stop=context.stop,
                    resume=resume, on_state=population.checkpoint, state_every=every,
                )  # fmt: skip
            except KeyboardInterrupt as stopped:
                for run in runs:
                    run.interrupted()
                    end(Ending(run.trial, TrialState.FAIL, error=stopped))
                raise
            except Exception as error:  # the population failed: none of its trials finished
                for run in runs:
                    run.ending = "failed"
                    end(Ending(run.trial, TrialState.FAIL, error=error))
                return
        for run, fitted in zip(runs, fits, strict=True):
            end(finished(run, [fitted]))
        population.done()


def _in_member_order(
    study: optuna.Study, trials: list[optuna.Trial], saved: dict[str, Any] | None
) -> list[optuna.Trial] | None:
    """The asked trials in the saved population's member order, where they are the retries of exactly
    its trials (a killed or stopped population); None otherwise (a new population)."""
    if saved is None:
        return None
    by_origin = {}
    for trial in trials:
        history = RetryHeartbeatStaleTrialCallback.retry_history(study._storage.get_trial(trial._trial_id))
        for number in history:
            by_origin[number] = trial
    ordered = [by_origin.get(number) for number in saved["trials"]]
    if any(trial is None for trial in ordered) or len({id(t) for t in ordered}) != len(trials):
        return None
    return [trial for trial in ordered if trial is not None]


class _Population:
    """The population's on_epoch: each member reports to its trial; at each interval, exploit and
    explore, recorded on the trials that changed; then the whole state, to the artifact store."""

    def __init__(self, study: optuna.Study, runs: list[TrialRun], spec: StudySpec, rule: PBTRule, store: Any) -> None:
        self.study, self.store = study, store
        self.runs, self.spec, self.rule = runs, spec, rule
        self.ranges = {p.key: Range(p.low, p.high, p.log, p.is_int) for p in spec.space}
        self.params = [dict(run.params) for run in runs]
        self.configs = [run.members[0].config for run in runs]
        self.rng = random.Random(rule.seed)
        self.schedules = [[{"epoch": 0, "params": dict(p)}] for p in self.params]
        self.lineages: list[list[dict[str, int]]] = [[] for _ in runs]
        for run, schedule in zip(runs, self.schedules, strict=True):
            write_trial(run.trial, schedule=schedule)

    def on_epoch(self, results: list[EpochResult]) -> Exploit | None:
        for result in results:
            self.runs[result.member].hear([result])  # reports; no pruner with pbt
        epoch = results[0].epoch
        if epoch % self.rule.interval or epoch >= self.configs[0].train.n_epochs:
            return None
        scores = [self.score(result) for result in sorted(results, key=lambda r: r.member)]
        copies = exploit(scores, self.rule.quantile, self.rng)
        configs = {}
        for target, source in copies.items():
            moved = explore(self.params[source], self.ranges, self.rule.perturb, self.rule.resample, self.rng)
            self.params[target] = moved
            self.configs[target] = configs[target] = cfg.apply(self.configs[target], moved)
            self.schedules[target].append({"epoch": epoch, "params": moved})
            self.lineages[target].append({"epoch": epoch, "from_trial": self.runs[source].trial.number})
            write_trial(self.runs[target].trial, schedule=self.schedules[target], lineage=self.lineages[target])
        return Exploit(copies, configs)

    def score(self, result: EpochResult) -> float:
        """A member's objective at an interval; NaN, which `exploit` ranks last, where its training loss
        went NaN or infinite: a diverged member is then among those that copy, and a better member's
        weights and AdamW state replace its own, rather than the whole population failing."""
        value = epoch_accuracy(result, self.spec.goals[0].metric)
        return value if math.isfinite(result.train_loss) else math.nan

    def checkpoint(self, state: FitState) -> None:
        """The population's state at an interval, to the artifact store; the one before it removed."""
        old = StudyMeta.read(self.study).pbt_state
        with tempfile.TemporaryDirectory(prefix="sweep-pbt-") as folder:
            path = Path(folder) / f"population-epoch-{state.epoch:05d}.pt"
            save_state(state, path)
            artifact_id = upload_state(self.store, self.study, path)
        write_pbt_state(
            self.study,
            {
                "artifact_id": artifact_id,
                "epoch": state.epoch,
                "trials": [run.trial.number for run in self.runs],
                "params": self.params,
                "rng": _jsonable(self.rng.getstate()),
            },
        )
        remove_id(self.store, old["artifact_id"] if old else None)

    def resume(self, saved: dict[str, Any]) -> FitState:
        """Go on from the saved state: each retry takes its member's curve, schedule and lineage so far."""
        with tempfile.TemporaryDirectory(prefix="sweep-pbt-") as folder:
            path = Path(folder) / "population.pt"
            download_state(self.store, saved["artifact_id"], path)
            state = load_state(path)
        numbers = dict(zip(saved["trials"], (run.trial.number for run in self.runs), strict=True))
        old = {t.number: t for t in self.study.get_trials(deepcopy=False) if t.number in numbers}
        self.params = [dict(p) for p in saved["params"]]
        # the saved hyperparameters on this run's configs (its threads and device may differ)
        self.configs = [cfg.apply(run.members[0].config, p) for run, p in zip(self.runs, self.params, strict=True)]
        state.configs = list(self.configs)
        self.rng.setstate(_tuples(saved["rng"]))
        for k, (run, was) in enumerate(zip(self.runs, saved["trials"], strict=True)):
            record = TrialRecord.read(old[was])
            self.schedules[k] = record.schedule or self.schedules[k]
            self.lineages[k] = [
                {**e, "from_trial": numbers.get(e["from_trial"], e["from_trial"])} for e in record.lineage
            ]
            write_trial(run.trial, schedule=self.schedules[k], lineage=self.lineages[k], resumed_from=state.epoch)
            for epoch, value in sorted(old[was].intermediate_values.items()):
                if epoch <= state.epoch:
                    run.trial.report(value, epoch)
            run.epochs.extend(epoch_results(state.bests[k]))
        return state

    def done(self) -> None:
        """The population finished: its saved state is no longer needed."""
        old = StudyMeta.read(self.study).pbt_state
        write_pbt_state(self.study, None)
        remove_id(self.store, old["artifact_id"] if old else None)


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value: Any) -> Any:
    """random.Random's state back from its JSON form (tuples, not lists)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
