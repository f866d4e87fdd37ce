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
"""

from __future__ import annotations

import contextlib
import random

import optuna
from optuna.trial import TrialState

from digitsum import config as cfg
from digitsum.pbt import Range, exploit, explore
from digitsum.train import EpochResult, Exploit, fit
from sweep.run.stack import End, Ending, begin, finished, heartbeat
from sweep.run.trial import TrialContext, TrialRun
from sweep.spec.model import PBTRule, StudySpec
from sweep.spec.objectives import epoch_accuracy
from sweep.store.records import write_trial


def run_population(study: optuna.Study, trials: list[optuna.Trial], context: TrialContext, end: End) -> None:
    """Train these asked trials as one population; ``end`` hears how each ended. On Ctrl-C or SIGTERM
    every trial ends as failed and interrupted (queued again by the worker)."""
    spec = context.spec
    assert spec.pbt is not None, "a population needs the spec's pbt:"
    with contextlib.ExitStack() as beats:
        for trial in trials:
            beats.enter_context(heartbeat(study, trial))
        runs = [run for run in (begin(trial, context, end) for trial in trials) if run is not None]
        if not runs:
            return
        population = _Population(runs, spec, spec.pbt)
        with contextlib.ExitStack() as logs:
            events = [log for run in runs for log in logs.enter_context(run.events())]
            try:
                probe = context.probe if context.probe_each_epoch else None
                members = [run.members[0] for run in runs]
                fits = fit(members, population.on_epoch, probe, events, stop=context.stop)
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


class _Population:
    """The population's on_epoch: each member reports to its trial; at each interval, exploit and
    explore, recorded on the trials that changed."""

    def __init__(self, runs: list[TrialRun], spec: StudySpec, rule: PBTRule) -> None:
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
        metric = self.spec.goals[0].metric
        scores = [epoch_accuracy(result, metric) for result in sorted(results, key=lambda r: r.member)]
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
