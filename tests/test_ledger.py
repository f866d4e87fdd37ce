"""The ledger agrees with a full read of the study, after every change, on every storage kind."""

from __future__ import annotations

import random

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from sweep.run import ledger as ledger_module
from sweep.run.ledger import CLAIMED, FINISHED, Ledger, place
from sweep.spec.objectives import best_numbers, dominates, feasible

optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture(params=["memory", "sqlite", "journal"])
def storage(request, tmp_path):
    if request.param == "memory":
        return None
    if request.param == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str(tmp_path / "j.log")))
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'l.db'}")


def full_read(study: optuna.Study, balance_key: str | None = None) -> dict:
    """What the ledger keeps, from a full read (the way the code did it before the ledger)."""
    trials = study.get_trials(deepcopy=False)
    result = {
        "finished": sum(t.state in FINISHED for t in trials),
        "claimed": sum(t.state in CLAIMED for t in trials),
        "waiting": sum(t.state == TrialState.WAITING for t in trials),
        "best": best_numbers(study),
        "before": {
            t.number: sum(1 for o in trials if o.number != t.number and o.state in CLAIMED and place(o) < t.number)
            for t in trials
            if t.state == TrialState.RUNNING
        },
    }
    if balance_key:
        from collections import Counter

        from sweep.store.records import param_or_queued

        result["choices"] = Counter(param_or_queued(t, balance_key) for t in trials if t.state in CLAIMED)
    return result


def ledger_view(ledger: Ledger, running: list[int]) -> dict:
    ledger.refresh()
    view = {
        "finished": ledger.finished,
        "claimed": ledger.claimed,
        "waiting": ledger.waiting,
        "best": set(ledger.best),
        "before": {n: ledger.claimed_before(n) for n in running},
    }
    if ledger.balance_key:
        view["choices"] = +ledger.choice_counts()
    return view


def test_a_kept_ledger_matches_a_full_read_after_every_change(storage):
    study = optuna.create_study(storage=storage, direction="maximize", study_name="ledger")
    kept = Ledger(study, balance_key="cell")
    rng = random.Random(0)
    running: list[optuna.Trial] = []
    for step in range(60):
        action = rng.choice(["ask", "ask", "complete", "prune", "fail", "enqueue", "retry"])
        if action == "ask" or not running and action in ("complete", "prune", "fail"):
            trial = study.ask()
            trial.suggest_categorical("cell", ["lstm", "gru", "rnn"])
            running.append(trial)
        elif action == "enqueue":
            study.enqueue_trial({"cell": rng.choice(["lstm", "gru"])})
        elif action == "retry":
            failed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
            if failed:
                RetryHeartbeatStaleTrialCallback()(study, failed[-1])
        else:
            trial = running.pop(rng.randrange(len(running)))
            if action == "complete":
                study.tell(trial, rng.random())
            else:
                study.tell(trial, state=TrialState.PRUNED if action == "prune" else TrialState.FAIL)
        numbers = [t.number for t in running]
        expected = full_read(study, "cell")
        expected["choices"] = +expected["choices"]
        assert ledger_view(kept, numbers) == expected, f"step {step}: {action}"
        if step % 10 == 0:  # a new ledger, on a study with history, agrees too
            assert ledger_view(Ledger(study, balance_key="cell"), numbers) == expected


def test_the_ledger_reports_each_final_trial_once_and_what_no_longer_needs_a_checkpoint():
    study = optuna.create_study(direction="minimize")
    ledger = Ledger(study)
    study.tell(study.ask(), 3.0)
    study.tell(study.ask(), 2.0)
    ledger.refresh()
    assert [t.number for t in ledger.take_done()] == [0, 1]
    assert [t.number for t in ledger.take_unneeded()] == [0]  # beaten by trial 1
    ledger.refresh()
    assert ledger.take_done() == []
    study.tell(study.ask(), 5.0)  # worse: not unneeded from the ledger's view (its own worker removes it)
    study.tell(study.ask(), state=TrialState.FAIL)
    ledger.refresh()
    assert [t.number for t in ledger.take_done()] == [2, 3]
    assert [t.number for t in ledger.take_unneeded()] == [3]
    assert set(ledger.best) == {1}
    study.tell(study.ask(), 1.0)
    ledger.refresh()  # a read by someone else (a budget check) ...
    ledger.refresh()
    assert [t.number for t in ledger.take_done()] == [4]  # ... still leaves it to the one who settles
    assert [t.number for t in ledger.take_unneeded()] == [1]


def test_a_number_not_visible_yet_is_read_later():
    # Another worker's trial can be created (numbered) and not yet visible while a later one is.
    study = optuna.create_study(direction="maximize")
    for value in (0.1, 0.2, 0.3):
        study.tell(study.ask(), value)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    ledger = Ledger(study)
    hidden = dict(trials)
    del hidden[1]
    ledger_module_cached = ledger_module._cached_trials
    try:
        ledger_module._cached_trials = lambda s: hidden  # trial 1 not committed yet
        ledger.refresh()
        assert ledger.finished == 2
        ledger_module._cached_trials = lambda s: trials
        ledger.take_done()
        ledger.refresh()
        assert [t.number for t in ledger.take_done()] == [1]
    finally:
        ledger_module._cached_trials = ledger_module_cached
    assert (ledger.finished, set(ledger.best)) == (3, {2})


def test_pareto_set_and_constraints_match_optuna():
    study = optuna.create_study(directions=["maximize", "minimize"])
    ledger = Ledger(study)
    rng = random.Random(1)
    for _ in range(40):
        trial = study.ask()
        trial.set_constraint("size", rng.choice([-1.0, 0.0, 1.0]))
        study.tell(trial, [rng.randint(0, 9), rng.randint(0, 9)])
        ledger.refresh()
        assert set(ledger.best) == {t.number for t in study.best_trials}
    assert all(feasible(t) for t in ledger.best.values())


def test_dominates():
    maximize, minimize = optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE
    a, b = [2, 1], [1, 1]
    assert dominates(a, b, [maximize, minimize]) and not dominates(b, a, [maximize, minimize])
    assert not dominates(a, a, [maximize, minimize])  # equal: neither dominates


def test_rdb_storages_take_the_incremental_path(tmp_path):
    # The ledger relies on Optuna's per-process trial cache (private to Optuna 5.0); if an Optuna
    # release removes it, this fails instead of every trial silently reading the whole study again.
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'c.db'}")
    study.tell(study.ask(), 1.0)
    cached = ledger_module._cached_trials(study)
    assert cached is not None and set(cached) == {0}
    assert ledger_module._cached_trials(optuna.create_study()) is None  # in memory: the full read
