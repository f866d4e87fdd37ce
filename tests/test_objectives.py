"""sweep.spec.objectives and the spec's objectives/constraints: several objectives, constraints, early stopping."""

from __future__ import annotations

import math

import optuna
import pytest
from sweep_helpers import assert_spec_mistake, spec_dict

from sweep.report._cost import _pareto_front
from sweep.reruns.stats import Spread, bootstrap_difference, verdict
from sweep.spec import parse_spec
from sweep.spec.objectives import Constraint, CurveMedian, Direction, Metric, Objective, measures

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

THREE = [{"metric": "val_exact_match"}, {"metric": "n_parameters"}, "seconds_to_target"]


def test_objectives_parse_with_natural_directions():
    spec = parse_spec(spec_dict(objectives=THREE, pruner={"type": "median", "n_startup_trials": 2}))
    assert spec.goals == (
        Objective(Metric.VAL_EXACT_MATCH, Direction.MAXIMIZE),
        Objective(Metric.N_PARAMETERS, Direction.MINIMIZE),
        Objective(Metric.SECONDS_TO_TARGET, Direction.MINIMIZE),
    )
    assert not spec.reports_per_epoch
    assert spec.early_stop == CurveMedian(n_startup_trials=2)
    assert isinstance(spec.make_pruner(), optuna.pruners.NopPruner)  # the trial applies the rule itself


def test_metric_stays_the_one_objective_shorthand():
    spec = parse_spec(spec_dict(metric="val_exact_match"))
    assert spec.goals == (Objective(Metric.VAL_EXACT_MATCH, Direction.MAXIMIZE),)
    assert spec.reports_per_epoch and spec.early_stop is None


def test_objectives_change_the_fingerprint_and_the_default_does_not():
    base = parse_spec(spec_dict())
    assert parse_spec(spec_dict(metric="val_exact_match")).fingerprint() == base.fingerprint()
    assert parse_spec(spec_dict(objectives=THREE)).fingerprint() != base.fingerprint()
    constrained = parse_spec(spec_dict(objectives=THREE, constraints={"n_parameters": {"max": 500}}))
    assert constrained.fingerprint() != parse_spec(spec_dict(objectives=THREE)).fingerprint()


MISTAKES = {
    "both metric and objectives": (dict(metric="val_exact_match", objectives=THREE), "objectives", "not both"),
    "empty objectives": (dict(objectives=[]), "objectives", "expected"),
    "unknown objective metric": (
        dict(objectives=[{"metric": "n_params"}]),
        "objectives[0].metric",
        "did you mean n_parameters",
    ),
    "bad direction": (
        dict(objectives=[{"metric": "n_parameters", "direction": "down"}]),
        "objectives[0].direction",
        "maximize",
    ),
    "unknown objective key": (
        dict(objectives=[{"metric": "n_parameters", "dir": "up"}]),
        "objectives[0].dir",
        "direction",
    ),
    "an objective twice": (dict(objectives=["n_parameters", "n_parameters"]), "objectives", "once"),
    "probe objective without probe lengths": (
        dict(objectives=["probe_exact_match", "n_parameters"]),
        "objectives",
        "probe_lengths",
    ),
    "a pruner that needs one objective": (
        dict(objectives=THREE, pruner={"type": "hyperband"}),
        "pruner.type",
        "median",
    ),
    "constraint on an unknown metric": (
        dict(constraints={"params": {"max": 5}}),
        "constraints.params",
        "unknown metric",
    ),
    "constraint without bounds": (dict(constraints={"n_parameters": {}}), "constraints.n_parameters", "min, max"),
    "constraint not a mapping": (dict(constraints={"n_parameters": 5}), "constraints.n_parameters", "expected bounds"),
    "constraints a list (found by make fuzz)": (dict(constraints=[]), "constraints", "expected bounds by metric"),
    "constraint with a bad bound": (
        dict(constraints={"n_parameters": {"max": "many"}}),
        "constraints.n_parameters.max",
        "'many'",
    ),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_objective_mistakes_name_file_and_key(mistake, tmp_path):
    assert_spec_mistake(tmp_path, *MISTAKES[mistake])


def test_constraint_violation_is_optunas_sign():
    upper = Constraint(Metric.N_PARAMETERS, high=1000)
    assert upper.violation(900) == -100 and upper.violation(1200) == 200
    band = Constraint(Metric.VAL_EXACT_MATCH, low=0.99, high=1.0)
    assert band.violation(0.995) <= 0 and band.violation(0.9) == pytest.approx(0.09)
    assert upper.name == "n_parameters <= 1000" and band.name == "val_exact_match >= 0.99 and <= 1"


def test_measures_take_costs_from_the_record_and_inf_for_a_target_never_reached():
    values = measures(
        {"n_parameters": 10, "train_seconds": 2.5, "seconds_to_target": None}, {Metric.VAL_EXACT_MATCH: 0.5}
    )
    assert values == {
        Metric.VAL_EXACT_MATCH: 0.5,
        Metric.N_PARAMETERS: 10.0,
        Metric.TRAIN_SECONDS: 2.5,
        Metric.SECONDS_TO_TARGET: math.inf,
    }


def _study_with_curves(curves: list[list[float]]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for curve in curves:
        trial = study.ask()
        trial.set_user_attr("val_curve", curve)
        study.tell(trial, [curve[-1], 1.0])
    return study


def test_curve_median_stops_a_trial_below_the_median_of_completed_curves():
    study = _study_with_curves([[0.2, 0.5, 0.9], [0.3, 0.6, 0.95], [0.1, 0.4, 0.8]])
    rule = CurveMedian(n_startup_trials=3, n_warmup_steps=1)
    assert not rule.should_stop(study, [0.0])  # warm-up epoch
    assert rule.should_stop(study, [0.1, 0.3])  # best so far 0.3 < median 0.5 at epoch 2
    assert not rule.should_stop(study, [0.1, 0.5])
    assert not rule.should_stop(study, [0.6, 0.2])  # its best so far counts, as in MedianPruner
    assert not CurveMedian(n_startup_trials=4).should_stop(study, [0.0, 0.0])  # too few completed yet


def test_curve_median_with_balance_compares_a_trial_with_its_own_model_type():
    study = optuna.create_study(directions=["maximize", "minimize"])
    kind = optuna.distributions.CategoricalDistribution(["lstm", "rnn"])
    for model_type, curve in (("lstm", [0.5, 0.9]), ("lstm", [0.6, 0.95]), ("rnn", [0.1, 0.3]), ("rnn", [0.1, 0.5])):
        study.add_trial(
            optuna.trial.create_trial(
                values=[curve[-1], 1.0],
                params={"model.model_type": model_type},
                distributions={"model.model_type": kind},
                user_attrs={"val_curve": curve},
            )
        )
    slow_rnn = {"model.model_type": "rnn"}
    assert CurveMedian(n_startup_trials=2).should_stop(study, [0.1, 0.45], slow_rnn)  # against every trial
    by_type = CurveMedian(n_startup_trials=2, group_by="model.model_type")
    assert not by_type.should_stop(study, [0.1, 0.45], slow_rnn)  # against the RNNs: their median is 0.4
    assert by_type.should_stop(study, [0.1, 0.35], slow_rnn)
    spec = parse_spec(spec_dict(objectives=THREE, balance="model.model_type", pruner="median"))
    assert spec.early_stop == CurveMedian(group_by="model.model_type")


def test_pareto_front_of_cost_and_error():
    costs, errors = [10, 20, 5, 30, 20], [0.1, 0.05, 0.3, 0.05, 0.2]
    assert _pareto_front(costs, errors) == [2, 0, 1]  # by increasing cost; 3 and 4 are dominated


def test_bootstrap_difference_and_the_sentence():
    noisy_a, noisy_b = Spread((0.9990, 0.9995, 0.9985)), Spread((0.9988, 0.9993, 0.9990))
    assert bootstrap_difference(noisy_a, noisy_b).within_noise
    assert "within seed noise" in verdict("LSTM", noisy_a, "GRU", noisy_b)
    clear_a, clear_b = Spread((0.999, 0.998, 0.999)), Spread((0.95, 0.96, 0.94))
    difference = bootstrap_difference(clear_a, clear_b)
    assert not difference.within_noise and difference.low > 0
    assert "better than RNN by 4.87 points, beyond seed noise" in verdict("LSTM", clear_a, "RNN", clear_b)
    assert "too few seeds" in verdict("LSTM", Spread((0.99,)), "GRU", Spread((0.98,)))
    assert bootstrap_difference(clear_a, clear_b) == difference  # seeded


# ---------------------------------------------------------------------------------------------
# The best trial: one rule for `sweep best`, the report, `rerun --top` and the API


def constrained_study(url: str) -> optuna.Study:
    """A one-objective study under `n_parameters <= 1000`: trial 1 scores best but breaks the constraint,
    trials 2 and 3 tie below it (the lower number wins), trial 0 is pruned."""
    import dataclasses

    from digitsum.config import Config
    from sweep.store.records import StudyMeta, TrialRecord

    study = optuna.create_study(storage=url, study_name="constrained", direction="maximize")
    constraint = Constraint(Metric.N_PARAMETERS, high=1000)
    StudyMeta(
        fingerprint="v2:test", metric="val_exact_match", base_config=Config().to_dict(),
        constraints=[constraint.to_dict()], space=[],
    ).write(study)  # fmt: skip
    distributions = {"model.hidden_size": optuna.distributions.IntDistribution(8, 64)}
    made = [
        (optuna.trial.TrialState.PRUNED, None, 900, "gru"),
        (optuna.trial.TrialState.COMPLETE, 0.99, 5000, "lstm"),
        (optuna.trial.TrialState.COMPLETE, 0.90, 800, "lstm"),
        (optuna.trial.TrialState.COMPLETE, 0.90, 700, "lstm"),
    ]
    for state, value, n_parameters, kind in made:
        record = TrialRecord(model_type=kind, n_parameters=n_parameters, val_exact_match=value, epochs_run=3)
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=value,
                params={"model.hidden_size": 8 + n_parameters // 1000},
                distributions=distributions,
                user_attrs=dataclasses.asdict(record),
                constraints={constraint.name: constraint.violation(n_parameters)},
            )
        )
    return study


def test_the_best_trial_is_complete_and_feasible_ties_to_the_lowest_number(tmp_path):
    from sweep.reruns.jobs import choose_trials
    from sweep.spec.objectives import best_numbers, best_of, best_trial, ranked

    study = constrained_study(f"sqlite:///{tmp_path}/s.db")
    trials = study.get_trials()
    assert best_trial(study).number == 2 and best_numbers(study) == {2}
    assert [t.number for t in ranked(trials)] == [2, 3]
    assert [t.number for t in ranked(trials, Direction.MINIMIZE)] == [2, 3]  # equal values: by number
    assert best_of(trials[:2]) is None  # a pruned trial and an infeasible one: none can be best
    assert [t.number for t in choose_trials(study, top=1)] == [2]  # `sweep rerun --top 1`


def test_sweep_best_and_the_report_name_the_same_best_trial_under_a_constraint(tmp_path):
    import json
    import re

    from sweep_helpers import invoke

    from sweep.report.frame import best_row, trials_frame

    url = f"sqlite:///{tmp_path}/s.db"
    constrained_study(url)
    shown = invoke("best", "constrained", "--storage", url, "--json")
    assert shown.exit_code == 0, shown.output
    best = json.loads(shown.stdout)["trial"]
    assert best == 2
    out = tmp_path / "report.html"
    written = invoke("report", "constrained", "--storage", url, "--out", out, "--no-attach")
    assert written.exit_code == 0, written.output
    page = out.read_text()
    assert re.search(r"<b>lstm</b> \(trial (\d+)\)", page).group(1) == str(best)  # the summary's best configuration
    assert f"Trial {best} of constrained" in page  # the error analysis (its checkpoint is not stored here)
    row = best_row(trials_frame([optuna.load_study(study_name="constrained", storage=url)]))
    assert row is not None and int(row.number) == best
    listed = invoke("ls", "--storage", url)  # the best value of `sweep ls` is the best feasible trial's too
    assert listed.exit_code == 0 and listed.stdout.splitlines()[-1].split()[-1] == "0.9000", listed.output
