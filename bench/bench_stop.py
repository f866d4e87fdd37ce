"""The stop rule (a spec's `stop:`) on the shipped compare-cost.yaml: trials saved, and what the
front reaches, against the full budget.

    .venv/bin/python bench/bench_stop.py [--workers 2] [--quick]

1. Runs compare-cost.yaml to its full budget (36 trials) through `sweep run`.
2. Replays its trials, in the order they finished, through the ledger with each stop rule below:
   where the rule would have stopped, and the Pareto front's hypervolume there against the full
   budget's (one reference point for both: 10% beyond the worst feasible value of each objective).
   The sampler's picks before the stop do not depend on the rule, so the replay is the run the rule
   would have made, up to the order two workers finish in.
3. Runs the spec again with one rule for real (a new study), and prints where it stopped.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import yaml
from optuna._hypervolume import compute_hypervolume
from optuna.trial import TrialState

from sweep.run.ledger import Ledger
from sweep.spec.model import StopRule
from sweep.spec.objectives import feasible, sign

REPO = Path(__file__).resolve().parents[1]
SWEEP = str(Path(sys.executable).with_name("sweep"))
RULES = [StopRule(6, 0.01), StopRule(9, 0.01), StopRule(12, 0.01), StopRule(9, 0.0)]
LIVE = StopRule(9, 0.01)


def run(spec: Path, url: str, folder: Path, workers: int) -> float:
    start = time.perf_counter()
    command = [SWEEP, "run", str(spec), "--storage", url, "--artifacts", str(folder / "art"), "--workers", str(workers)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    print("\n".join(line for line in done.stdout.splitlines() if "ended early" in line or "trials finished" in line))
    return time.perf_counter() - start


def losses(trials: list[optuna.trial.FrozenTrial], directions: list) -> np.ndarray:
    signs = np.array([sign(d) for d in directions])
    return np.array([-signs * np.array(t.values) for t in trials if t.state == TrialState.COMPLETE and feasible(t)])


def front_volume(points: np.ndarray, reference: np.ndarray) -> float:
    return compute_hypervolume(points, reference) if len(points) else 0.0


def finish_order(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return sorted(trials, key=lambda t: t.datetime_complete or t.datetime_start or datetime.datetime.max)


def replay(study: optuna.Study, rule: StopRule) -> int:
    """How many finished trials the rule lets run when the trials finish in the stored order."""
    order = finish_order(study.get_trials(deepcopy=False))
    shadow = optuna.create_study(directions=study.directions)
    ledger = Ledger(shadow, stop=rule)
    for count, trial in enumerate(order, start=1):
        shadow.add_trial(trial)
        ledger.refresh()
        if ledger.stopped:
            return count
    return len(order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="12 trials of 6 epochs: a smoke run")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    raw = yaml.safe_load((REPO / "studies" / "compare-cost.yaml").read_text())
    if args.quick:
        raw.update(n_trials=12, target=0.9, fixed={**raw["fixed"], "train.n_epochs": 6})
        raw["constraints"] = {"val_exact_match": {"min": 0.9}}
    with tempfile.TemporaryDirectory(prefix="bench-stop-") as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'stop.db'}"
        (folder / "full.yaml").write_text(yaml.safe_dump(raw))
        seconds = run(folder / "full.yaml", url, folder, args.workers)
        study = optuna.load_study(study_name=raw["name"], storage=url)
        trials = study.get_trials(deepcopy=False)
        print(f"full budget: {len(trials)} trials in {seconds:.0f} s (one run, {args.workers} workers)")
        live = {**raw, "name": f"{raw['name']}-stop", "stop": {"patience": LIVE.patience, "min_delta": LIVE.min_delta}}
        (folder / "live.yaml").write_text(yaml.safe_dump(live))
        seconds = run(folder / "live.yaml", url, folder, args.workers)
        stopped = optuna.load_study(study_name=live["name"], storage=url).get_trials(deepcopy=False)
        print(f"live run with stop {live['stop']}: {len(stopped)} trials in {seconds:.0f} s (a new study, one run)")
        report(study, trials, stopped)


def report(study: optuna.Study, trials: list[optuna.trial.FrozenTrial], live: list[optuna.trial.FrozenTrial]) -> None:
    """The replayed rules, the live run and the full budget; one hypervolume reference point for all."""
    everything = losses(trials, study.directions)
    live_losses = losses(live, study.directions)
    both = np.vstack([everything, live_losses]) if live_losses.size else everything
    reference = both.max(axis=0) + 0.1 * (both.max(axis=0) - both.min(axis=0))
    full = front_volume(everything, reference)
    order = finish_order(trials)
    print(f"{'rule':34s} {'trials':>6s} {'saved':>6s} {'hypervolume vs full':>20s} {'smallest feasible':>18s}")
    names = list(study.metric_names or [])
    smallest = names.index("n_parameters") if "n_parameters" in names else 0

    def row(label: str, kept_trials: list[optuna.trial.FrozenTrial]) -> None:
        kept = losses(kept_trials, study.directions)
        share = front_volume(kept, reference) / full if full else float("nan")
        small = f"{kept[:, smallest].min():,.0f}" if len(kept) else "none"
        print(f"{label:34s} {len(kept_trials):6d} {len(trials) - len(kept_trials):6d} {share:20.1%} {small:>18s}")

    for rule in RULES:
        row(f"replay: patience {rule.patience}, min_delta {rule.min_delta:g}", order[: replay(study, rule)])
    row(f"live: patience {LIVE.patience}, min_delta {LIVE.min_delta:g}", live)
    row("full budget", trials)


if __name__ == "__main__":
    main()
