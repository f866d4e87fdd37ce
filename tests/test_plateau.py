"""The stop rule: finished trials without a gain, counted by the ledger at O(1) per trial."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from sweep.run.budget import Step, next_step
from sweep.run.ledger import Ledger
from sweep.run.plateau import Plateau
from sweep.spec.model import StopRule

optuna.logging.set_verbosity(optuna.logging.ERROR)


def told(study: optuna.Study, *outcomes: float | tuple[float, ...] | None) -> None:
    """One trial per outcome: a value (or values) completes it, None prunes it."""
    for outcome in outcomes:
        trial = study.ask()
        if outcome is None:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, outcome)


def ledger_after(study: optuna.Study, rule: StopRule) -> Ledger:
    ledger = Ledger(study, stop=rule)
    ledger.refresh()
    return ledger


def test_no_gain_over_patience_trials_stops():
    study = optuna.create_study(direction="maximize")
    told(study, 0.5, 0.6, 0.6, 0.55, None)
    ledger = ledger_after(study, StopRule(patience=3))
    assert ledger.stopped and ledger.plateau.gained_by.number == 1
    assert next_step(ledger, n_trials=100) is Step.DONE
    assert "over the last 3 finished trials" in ledger.plateau.reason("val_exact_match")


def test_a_gain_sets_the_count_back():
    study = optuna.create_study(direction="maximize")
    told(study, 0.5, 0.4, 0.4, 0.7, 0.6)
    ledger = ledger_after(study, StopRule(patience=3))
    assert ledger.plateau.since_gain == 1 and not ledger.stopped
    assert next_step(ledger, n_trials=100) is Step.RUN


def test_gains_below_min_delta_do_not_count():
    study = optuna.create_study(direction="maximize")
    told(study, 0.9, 0.9003, 0.9006, 0.9009)  # each a new best, none 0.001 above the last gain
    ledger = ledger_after(study, StopRule(patience=3, min_delta=0.001))
    assert ledger.stopped
    assert 3 in ledger.best  # the best trial still moves; only the rule's reference does not


def test_minimized_values_gain_downward():
    study = optuna.create_study(direction="minimize")
    told(study, 5.0, 4.0, 3.0)
    assert ledger_after(study, StopRule(patience=1)).plateau.since_gain == 0


def test_counted_as_the_trials_come():
    """The same count whether the ledger reads the trials one at a time or all at once."""
    study = optuna.create_study(direction="maximize")
    live = Ledger(study, stop=StopRule(patience=4, min_delta=0.01))
    for value in (0.1, 0.3, 0.305, 0.2, 0.5, 0.49, 0.4):
        told(study, value)
        live.refresh()
    assert live.plateau.since_gain == ledger_after(study, StopRule(patience=4, min_delta=0.01)).plateau.since_gain == 2


def test_several_objectives_use_the_hypervolume():
    study = optuna.create_study(directions=["maximize", "minimize"])
    told(study, (0.5, 100.0), (0.8, 300.0))  # a front of two
    told(study, (0.5, 150.0), (0.7, 400.0))  # dominated: no gain
    told(study, (0.8, 299.0))  # enters the front, but adds almost no volume
    ledger = ledger_after(study, StopRule(patience=3, min_delta=0.01))
    assert ledger.stopped
    told(study, (0.95, 120.0))  # dominates both: a large gain
    ledger = ledger_after(study, StopRule(patience=3, min_delta=0.01))
    assert ledger.plateau.since_gain == 0 and ledger.plateau.gained_by.number == 5
    assert "hypervolume" in ledger.plateau.reason("val_exact_match")


@pytest.mark.parametrize("patience", [1, 5])
def test_pruned_trials_count_as_finished(patience):
    study = optuna.create_study(direction="maximize")
    told(study, 0.5, *[None] * patience)
    assert ledger_after(study, StopRule(patience=patience)).stopped


def test_the_hypervolume_is_optunas():
    """plateau.py uses Optuna's private hypervolume (5.1); this fails if it moves or changes."""
    import numpy as np

    plateau = Plateau(StopRule(1), [optuna.study.StudyDirection.MINIMIZE] * 2)
    assert plateau.reached is False
    from optuna._hypervolume import compute_hypervolume

    assert compute_hypervolume(np.array([[1.0, 1.0]]), np.array([2.0, 3.0])) == pytest.approx(2.0)


def test_the_count_starts_at_the_first_complete_trial():
    """Pruned trials before any complete one are not a plateau: there is nothing to improve on yet."""
    study = optuna.create_study(direction="maximize")
    told(study, None, None, None, None)
    ledger = ledger_after(study, StopRule(patience=2))
    assert not ledger.stopped and ledger.plateau.since_gain == 0
    told(study, 0.3, None, None)
    assert ledger_after(study, StopRule(patience=2)).stopped
