"""Reading stored studies whole or by counting: trial counts by state and the best value (`sweep ls`,
no trial loaded), the trials whose workers are alive (`sweep copy`), and every trial of a study in one
query per table (reports)."""

from __future__ import annotations

import datetime
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select

from sweep.store.records import recorded_constraints
from sweep.store.storage import heartbeat_settings, rdb_of


def study_rows(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """Each stored study: its name, number of objectives, trial counts by state and best value (Optuna's
    query for one objective), and whether it has constraints (then the best value is the best feasible
    trial's, which only a read of its trials can tell: `sweep.spec.objectives.best_trial`)."""
    rows = []
    for summary in storage.get_all_studies():
        study_id = summary._study_id  # Optuna's own id, not exported on FrozenStudy
        several = len(summary.directions) > 1
        rows.append(
            {
                "study": summary.study_name,
                "n_objectives": len(summary.directions),
                "counts": {state.name: n for state, n in trial_counts(storage, study_id).items()},
                "best": None if several else best_value(storage, study_id),
                "constrained": bool(recorded_constraints(summary)),
            }
        )
    return rows


def trial_counts(storage: optuna.storages.BaseStorage, study_id: int) -> dict[TrialState, int]:
    """A study's trials by state: one COUNT on an RDB storage (no trial is loaded; 10,000 trials
    load in about 6 s here), a full read on others."""
    counts = dict.fromkeys(TrialState, 0)
    if isinstance(storage, RDBStorage):
        from optuna.storages._rdb import models  # Optuna's tables; tests/test_storage.py checks them
        from sqlalchemy import func

        session = storage.scoped_session()
        try:
            rows = (
                session.query(models.TrialModel.state, func.count())
                .filter(models.TrialModel.study_id == study_id)
                .group_by(models.TrialModel.state)
                .all()
            )
        finally:
            session.close()
        counts.update({TrialState(state) if not isinstance(state, TrialState) else state: n for state, n in rows})
        return counts
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        counts[trial.state] += 1
    return counts


def best_value(storage: optuna.storages.BaseStorage, study_id: int) -> float | None:
    """The best complete value of a one-objective study (Optuna's query for it), None if none."""
    try:
        return storage.get_best_trial(study_id).value
    except ValueError:
        return None


def live_trials(storage: optuna.storages.BaseStorage, study: optuna.Study) -> list[int]:
    """Numbers of the study's RUNNING trials whose worker may be alive: a heartbeat (before the first
    one, the start) within the grace period and one interval, the silence after which a worker adopts
    and fails a trial (sweep.run.worker). Without heartbeats (a journal file) every RUNNING trial counts."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running or not isinstance(storage, RDBStorage):
        return [t.number for t in running]
    from optuna.storages._rdb import models  # Optuna's tables; tests/test_storage.py checks them
    from sqlalchemy import func

    beats = heartbeat_settings()
    silence = datetime.timedelta(seconds=beats.grace_period + beats.interval)
    table = models.TrialHeartbeatModel.__table__
    with storage.engine.connect() as connection:
        # The database's clock, as Optuna's stale-trial check reads it: heartbeats are stamped by it.
        now = connection.execute(select(func.now())).scalar_one().replace(tzinfo=None)
        found = connection.execute(
            select(table.c.trial_id, table.c.heartbeat).where(table.c.trial_id.in_([t._trial_id for t in running]))
        )
        heartbeats = {row.trial_id: row.heartbeat for row in found}
    started_before = datetime.datetime.now() - silence  # a trial's start is this machine's local time
    return [
        t.number
        for t in running
        if (now - heartbeats[t._trial_id] < silence if t._trial_id in heartbeats else _started_after(t, started_before))
    ]


def _started_after(trial: FrozenTrial, moment: datetime.datetime) -> bool:
    return trial.datetime_start is None or trial.datetime_start >= moment


def read_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial of a study, in number order: on an RDB storage with one query per table, which
    takes about 1 s at 10,000 trials here where Optuna's own read (an ORM object per stored row)
    takes 7-9 s; elsewhere `study.get_trials`. For reading whole studies (reports), not for workers."""
    backend = rdb_of(study)
    if backend is None:
        return study.get_trials(deepcopy=False)
    from optuna.storages._rdb import models  # Optuna's tables; tests/test_storage.py compares with get_trials

    trials = models.TrialModel.__table__
    with backend.engine.connect() as connection:

        def rows(model: Any, *columns: str) -> list[Any]:
            table = model.__table__
            query = select(table.c.trial_id, *(table.c[c] for c in columns)).select_from(
                table.join(trials, trials.c.trial_id == table.c.trial_id)
            )
            return list(
                connection.execute(query.where(trials.c.study_id == study._study_id).order_by(*table.primary_key))
            )

        query = select(
            trials.c.trial_id, trials.c.number, trials.c.state, trials.c.datetime_start, trials.c.datetime_complete
        )
        heads = list(connection.execute(query.where(trials.c.study_id == study._study_id).order_by(trials.c.number)))
        parts = {
            "params": rows(models.TrialParamModel, "param_name", "param_value", "distribution_json"),
            "values": rows(models.TrialValueModel, "objective", "value", "value_type"),
            "steps": rows(models.TrialIntermediateValueModel, "step", "intermediate_value", "intermediate_value_type"),
            "user": rows(models.TrialUserAttributeModel, "key", "value_json"),
            "system": rows(models.TrialSystemAttributeModel, "key", "value_json"),
        }
    return _frozen_trials(heads, parts, models)


def _frozen_trials(heads: list[Any], parts: dict[str, list[Any]], models: Any) -> list[FrozenTrial]:
    """FrozenTrials from the rows, converted as Optuna's RDB storage converts them."""
    import json
    from collections import defaultdict

    from optuna.distributions import json_to_distribution

    by_trial: dict[str, dict[int, list[Any]]] = {name: defaultdict(list) for name in parts}
    for name, found in parts.items():
        for row in found:
            by_trial[name][row[0]].append(row[1:])
    distributions: dict[str, Any] = {}  # one parse per distinct distribution
    trials = []
    for trial_id, number, state, start, complete in heads:
        values = {i: models.TrialValueModel.stored_repr_to_value(v, t) for i, v, t in by_trial["values"][trial_id]}
        dists = {
            n: distributions.get(d) or distributions.setdefault(d, json_to_distribution(d))
            for n, _, d in by_trial["params"][trial_id]
        }
        trials.append(
            FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=[values[i] for i in sorted(values)] or None,
                datetime_start=_local(start),
                datetime_complete=_local(complete),
                params={n: dists[n].to_external_repr(v) for n, v, _ in by_trial["params"][trial_id]},
                distributions=dists,
                user_attrs={k: json.loads(v) for k, v in by_trial["user"][trial_id]},
                system_attrs={k: json.loads(v) for k, v in by_trial["system"][trial_id]},
                intermediate_values={
                    s: models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(v, t)
                    for s, v, t in by_trial["steps"][trial_id]
                },
                trial_id=trial_id,
            )
        )
    return trials


def _local(stored: datetime.datetime | None) -> datetime.datetime | None:
    """Optuna's RDB storage keeps naive UTC and gives naive local time."""
    return None if stored is None else stored.replace(tzinfo=datetime.timezone.utc).astimezone().replace(tzinfo=None)
