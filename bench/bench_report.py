"""Benchmark of `sweep.report.page.write_report` on a large study: 500 trials, target 10 s.

    .venv/bin/python bench/bench_report.py [--trials 500] [--pruned 0.4] [--repeats 1] [--storage memory|sqlite]
                                           [--objectives 1|3]

With `--objectives 3` the study has three objectives (n_parameters and seconds_to_target minimized,
val_exact_match maximized, as studies/compare-cost.yaml), keeps each curve in the trial's record
instead of `trial.report`, and carries seed reruns of its best trials, so the Seed spread, At the
target and Cost sections have their full work.

No model is trained. The study is built with Optuna's ask/tell over the compare-cells search space
(model.model_type rnn/lstm/gru, model.hidden_size, train.learning_rate, train.batch_size): every
trial reports a plausible learning curve epoch by epoch (`trial.report`), about 40% of them stop
early and are told PRUNED, the rest COMPLETE with their best epoch's value; each carries the user
attributes a real trial records (model_type, n_parameters, seconds_per_epoch, epochs_run,
val_exact_match, val_by_length, probe_exact_match, probe_by_length). The study stays in Optuna's
in-memory storage (the default; building takes about a second) or, with `--storage sqlite`, is
copied into a temporary SQLite file first, so the report reads it the way `sweep report` does
(optuna writes the trials one by one: about 5 minutes for 10,000). The report is written
to a temporary HTML file, timed with time.perf_counter after the report's imports
(torch, plotly, pandas) are loaded, so the time is the report's own work: reading the trials,
building every section and writing the file.

The synthetic trials have no checkpoint, so the error analysis (which decodes the best model's
validation rows) is not part of the time.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

import sweep.report.page
import sweep.run.trial

TARGET_SECONDS = 10.0
STUDY = "bench-report"
N_EPOCHS = 24
TRAIN_LENGTHS = (2, 3, 4)
PROBE_LENGTHS = (5,)
SPACE = {
    "model.model_type": CategoricalDistribution(["rnn", "lstm", "gru"]),
    "model.hidden_size": IntDistribution(16, 256, log=True),
    "train.learning_rate": FloatDistribution(3e-4, 2e-2, log=True),
    "train.batch_size": CategoricalDistribution([32, 64, 128, 256]),
}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
CEILING = {"rnn": 0.55, "lstm": 0.97, "gru": 0.95}  # how well each cell type ends up doing


def n_parameters(model_type: str, hidden: int, embedding: int = 16, vocab: int = 13) -> int:
    """About what DigitSumModel has: embedding, one recurrent layer, output layer."""
    gates = GATES[model_type]
    return vocab * embedding + gates * (hidden * (embedding + hidden) + 2 * hidden) + hidden * vocab + vocab


def curve(rng: random.Random, model_type: str, hidden: int, lr: float, batch: int, epochs: int) -> list[float]:
    """A saturating learning curve with noise, in [0, 1]."""
    quality = (
        CEILING[model_type] * min(1.0, 0.55 + 0.1 * math.log2(hidden / 16)) * (1.0 - 0.25 * abs(math.log10(lr / 3e-3)))
    )
    speed = 2.0 + 6.0 * (batch / 256) / (lr / 3e-3) ** 0.5
    values = []
    for epoch in range(1, epochs + 1):
        value = quality * (1.0 - math.exp(-epoch / speed)) + rng.gauss(0.0, 0.015)
        values.append(min(1.0, max(0.0, value)))
    return values


MULTI = ["minimize", "minimize", "maximize"]  # n_parameters, seconds_to_target, val_exact_match


def build_study(n_trials: int, pruned_fraction: float, seed: int, objectives: int = 1) -> optuna.Study:
    rng = random.Random(seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=STUDY,
        directions=MULTI if objectives > 1 else ["maximize"],
        storage=optuna.storages.InMemoryStorage(),
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )
    study.set_user_attr("metric", "val_exact_match")
    study.set_user_attr("value_from", "best")
    study.set_user_attr(
        "description", f"synthetic: {n_trials} trials, about {pruned_fraction:.0%} pruned, nothing trained"
    )
    study.set_user_attr("spec_path", "bench/bench_report.py")
    study.set_user_attr("probe", {"lengths": list(PROBE_LENGTHS), "sample": 10_000})
    study.set_metric_names(
        ["n_parameters", "seconds_to_target", "val_exact_match"] if objectives > 1 else ["val_exact_match"]
    )
    if objectives > 1:
        study.set_user_attr(
            "objectives",
            [
                {"metric": m, "direction": d}
                for m, d in zip(("n_parameters", "seconds_to_target", "val_exact_match"), MULTI, strict=True)
            ],
        )
    pruned = set(rng.sample(range(n_trials), round(pruned_fraction * n_trials)))
    for number in range(n_trials):
        trial = study.ask(SPACE)
        model_type = trial.params["model.model_type"]
        hidden = trial.params["model.hidden_size"]
        values = curve(
            rng, model_type, hidden, trial.params["train.learning_rate"], trial.params["train.batch_size"], N_EPOCHS
        )
        epochs = rng.randint(3, N_EPOCHS - 1) if number in pruned else N_EPOCHS
        if objectives > 1:
            trial.set_user_attr("val_curve", values[:epochs])
        else:
            for epoch, value in enumerate(values[:epochs], start=1):
                trial.report(value, epoch)
        seconds = 0.02 * GATES[model_type] * (hidden / 64) ** 1.5 * 11_100 / trial.params["train.batch_size"] + 0.3
        trial.set_user_attr("model_type", model_type)
        trial.set_user_attr("n_parameters", n_parameters(model_type, hidden))
        trial.set_user_attr("seconds_per_epoch", round(seconds, 4))
        trial.set_user_attr("epochs_run", epochs)
        reached = next((i for i, v in enumerate(values[:epochs]) if v >= 0.9), None)
        trial.set_user_attr("train_seconds", round(0.8 * seconds * epochs, 4))
        trial.set_user_attr("epoch_to_target", None if reached is None else reached + 1)
        to_target = None if reached is None else round(0.8 * seconds * (reached + 1), 4)
        trial.set_user_attr("seconds_to_target", to_target)
        best = max(values[:epochs])
        by_length = {
            str(n): round(min(1.0, max(0.0, best * (1.03 - 0.02 * (n - 2)) + rng.gauss(0, 0.01))), 5)
            for n in TRAIN_LENGTHS
        }
        trial.set_user_attr("val_by_length", by_length)
        if number in pruned:
            study.tell(trial, state=TrialState.PRUNED)
            continue
        probe = round(max(0.0, best * rng.uniform(0.2, 0.9)), 5)
        trial.set_user_attr("best_epoch", values.index(best) + 1)
        trial.set_user_attr("val_exact_match", best)
        trial.set_user_attr("probe_exact_match", probe)
        trial.set_user_attr("probe_by_length", {str(n): probe for n in PROBE_LENGTHS})
        if objectives > 1:
            cost = math.inf if to_target is None else to_target
            study.tell(trial, [n_parameters(model_type, hidden), cost, best])
        else:
            study.tell(trial, best)
    if objectives > 1:
        add_reruns(study, rng)
    return study


def add_reruns(study: optuna.Study, rng: random.Random, per_type: int = 2, seeds: int = 3) -> None:
    """Seed reruns of each model type's best trials, as `sweep rerun --top 2 --seeds 0,1,2` stores them."""
    from sweep.store.records import RerunRecord, write_rerun

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    for model_type in GATES:
        best = sorted((t for t in complete if t.params["model.model_type"] == model_type), key=lambda t: -t.values[2])
        for trial in best[:per_type]:
            for seed in range(seeds):
                value = min(1.0, max(0.0, trial.values[2] + rng.gauss(0, 0.01)))
                write_rerun(
                    study,
                    RerunRecord(
                        trial.number,
                        seed,
                        trial.values[0],
                        value,
                        n_parameters=int(trial.values[0]),
                        train_seconds=trial.user_attrs["train_seconds"],
                        seconds_to_target=trial.user_attrs["seconds_to_target"],
                        epochs=N_EPOCHS,
                    ),
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--pruned", type=float, default=0.4, help="fraction of trials told PRUNED")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs; the median is reported")
    parser.add_argument("--storage", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objectives", type=int, choices=(1, 3), default=1)
    args = parser.parse_args()
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        start = time.perf_counter()
        built = build_study(args.trials, args.pruned, args.seed, args.objectives)
        if args.storage == "sqlite":
            from sweep.store.storage import open_storage

            url = f"sqlite:///{tmp}/bench.db"  # opened as `sweep` opens it (WAL): the copy takes ~1/10 the time
            optuna.copy_study(from_study_name=STUDY, from_storage=built._storage, to_storage=open_storage(url))
            study = optuna.load_study(study_name=STUDY, storage=open_storage(url))
        else:
            url, study = "in-memory", built
        counts = {
            s.name: n
            for s, n in ((s, sum(t.state == s for t in built.get_trials(deepcopy=False))) for s in TrialState)
            if n
        }
        print(
            f"built {args.trials} trials in {time.perf_counter() - start:.1f}s ({url}): "
            + ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
        )
        print(f"python {platform.python_version()}, optuna {optuna.__version__}, {platform.machine()}")

        out = Path(tmp) / "report.html"
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            try:
                n_figures = sweep.report.page.write_report([study], out, url)
            except Exception as error:  # report the failure as the benchmark's result
                first = " ".join(str(error).split())[:200]
                print(f"write_report FAILED after {time.perf_counter() - start:.1f}s: {type(error).__name__}: {first}")
                return 1
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        print(
            f"write_report: {seconds:.2f}s for {args.trials} trials, {args.objectives} objective(s) "
            f"({n_figures} figures, {out.stat().st_size / 1e6:.1f} MB)"
            + (f", median of {args.repeats}" if args.repeats > 1 else "")
        )
        ratio = seconds / TARGET_SECONDS
        verdict = f"within target, {1 / ratio:.1f}x headroom" if ratio <= 1.0 else "OVER target"
        print(f"target {TARGET_SECONDS:.0f}s: ratio {ratio:.2f} ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
