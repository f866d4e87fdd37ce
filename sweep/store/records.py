"""What a sweep stores in Optuna: the study's metadata and each trial's record.

The only module that reads or writes Optuna user attributes. Each stored key is a field of
`StudyMeta` or `TrialRecord` (its name is the stored key, its default is what a study or trial
that lacks it reads as), so studies stored by older versions load with the defaults. To store a
new key, add a field here and write it with `write_trial` or `StudyMeta.write`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.study._frozen import FrozenStudy  # what storage.get_all_studies returns; not exported
from optuna.trial import FrozenTrial

from digitsum.lengths import PROBE_SAMPLE, Probe

MODEL_TYPE_KEY = "model.model_type"


@dataclass(frozen=True)
class StudyMeta:
    """Written once, when `sweep run` makes the study: enough to resume, report and re-train it."""

    fingerprint: str | None = None  # what a resumed spec must match (sweep.spec.model.StudySpec.fingerprint)
    spec_path: str = "?"
    description: str = ""
    metric: str = "value"  # a study not made by `sweep run` has only Optuna's value
    value_from: str = "best"  # the trial's value: its best epoch (by validation) or its last
    base_config: dict[str, Any] | None = None  # defaults + data + fixed; None: not made by `sweep run`
    probe: Probe = Probe()
    target: float = 0.99  # the validation exact match that counts as trained (time to target)
    objectives: list[dict[str, str]] | None = None  # [{metric, direction}]; None: `metric`, maximized
    constraints: list[dict[str, Any]] = field(default_factory=list)  # [{metric, min, max}]
    artifacts: str | None = None  # where checkpoints are stored (sweep.store.artifacts); None: made before artifacts
    space: list[dict[str, Any]] | None = None  # the searched dimensions (Param.to_dict each); for `sweep enqueue`
    seed_aggregate: str = "mean"  # a trial's value over its train.n_seeds seeds: mean or min
    versions: dict[str, str] | None = None  # torch, optuna, digitsum-sweep when made; None: made before they were
    # a pbt population's state at its last interval, while it trains (sweep.run.pbt): {artifact_id, epoch,
    # trials (by member), params (by member), rng}; None once it finished, or without pbt
    pbt_state: dict[str, Any] | None = None

    @classmethod
    def read(cls, study: optuna.Study) -> StudyMeta:
        attrs = study.user_attrs
        known = {f.name: attrs[f.name] for f in dataclasses.fields(cls) if f.name in attrs and f.name != "probe"}
        stored_probe = attrs.get("probe") or {}
        probe = Probe(
            tuple(stored_probe.get("lengths", ())),
            int(stored_probe.get("sample", PROBE_SAMPLE)),
            bool(stored_probe.get("in_range", False)),
        )
        return cls(**known, probe=probe)

    def write(self, study: optuna.Study) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "probe":
                value = {"lengths": list(self.probe.lengths), "sample": self.probe.sample}
                if self.probe.in_range:  # only then: a study's stored probe is as before without it
                    value["in_range"] = True
            study.set_user_attr(f.name, value)


@dataclass(frozen=True)
class RerunRecord:
    """One re-training of a stored trial's config with another seed (`sweep rerun`), kept on the
    study under its own key (``rerun:TRIAL:SEED``), so workers never overwrite each other's."""

    trial: int
    seed: int
    value: float  # the study's first objective
    val_exact_match: float
    probe_exact_match: float | None = None
    n_parameters: int | None = None
    train_seconds: float | None = None
    epoch_to_target: int | None = None
    seconds_to_target: float | None = None
    epochs: int = 0
    num_threads: int = 0
    # in-range exact match per probe length (a study whose probe has in-range rows): the length curve
    probe_in_range_by_length: dict[str, float] | None = None

    @property
    def key(self) -> str:
        return f"{RERUN_PREFIX}{self.trial}:{self.seed}"


RERUN_PREFIX = "rerun:"


def seed_runs(trial: FrozenTrial, reruns: list[RerunRecord]) -> list[RerunRecord]:
    """Every seed a trial's config trained: its own seeds (``train.n_seeds``) and its stored reruns
    (of ``reruns``, the study's), by seed."""
    return merged_seeds(
        own_seeds(trial.number, TrialRecord.read(trial)), [r for r in reruns if r.trial == trial.number]
    )


def own_seeds(number: int, record: TrialRecord) -> list[RerunRecord]:
    """The seeds trial ``number`` trained itself (``train.n_seeds`` > 1), as rerun records."""
    names = {f.name for f in dataclasses.fields(RerunRecord)}
    return [
        RerunRecord(trial=number, seed=int(seed), **{k: v for k, v in values.items() if k in names})
        for seed, values in record.per_seed.items()
    ]


def merged_seeds(own: list[RerunRecord], reruns: list[RerunRecord]) -> list[RerunRecord]:
    """A trial's own seeds and its reruns, by seed; a rerun of a seed the trial trained itself is the same run."""
    seeds = {r.seed for r in own}
    return sorted([*own, *(r for r in reruns if r.seed not in seeds)], key=lambda r: r.seed)


def write_rerun(study: optuna.Study, record: RerunRecord) -> None:
    study.set_user_attr(record.key, dataclasses.asdict(record))


def read_reruns(study: optuna.Study) -> list[RerunRecord]:
    """Every stored rerun of the study, by trial and seed."""
    names = {f.name for f in dataclasses.fields(RerunRecord)}
    records = [
        RerunRecord(**{k: v for k, v in value.items() if k in names})
        for key, value in study.user_attrs.items()
        if key.startswith(RERUN_PREFIX)
    ]
    return sorted(records, key=lambda r: (r.trial, r.seed))


def recorded_constraints(study: FrozenStudy) -> list[dict[str, Any]]:
    """The constraints a stored study recorded (from `storage.get_all_studies`, no loading)."""
    return list(study.user_attrs.get("constraints") or [])


def recorded_artifacts(study: FrozenStudy) -> str | None:
    """The artifact store a stored study recorded (from `storage.get_all_studies`, no loading)."""
    return study.user_attrs.get("artifacts")


def write_artifacts(study: optuna.Study, location: str) -> None:
    """Record the artifact store of a study made before checkpoints were artifacts."""
    study.set_user_attr("artifacts", location)


def write_space(study: optuna.Study, space: list[dict[str, Any]]) -> None:
    """Record the search space of a study made before it was stored (the fingerprint says it is the same)."""
    study.set_user_attr("space", space)


def write_fingerprint(study: optuna.Study, fingerprint: str) -> None:
    """Replace the stored fingerprint (a study made before fingerprints came from the validated spec)."""
    study.set_user_attr("fingerprint", fingerprint)


def copy_study_attrs(source: optuna.Study, storage: optuna.storages.BaseStorage, study_id: int, artifacts: str) -> None:
    """Give a copy of `source` (`sweep copy`) every study attribute of the source, its StudyMeta, its
    seed reruns and any other key, except the artifact store, which becomes the copy's `artifacts`."""
    for key, value in source.user_attrs.items():
        storage.set_study_user_attr(study_id, key, value)
    storage.set_study_user_attr(study_id, "artifacts", artifacts)


ARTIFACT_ATTR_PREFIX = "artifacts:"  # Optuna's system attribute per uploaded artifact (optuna.artifacts)


def copied_trial(trial: FrozenTrial, new_ids: dict[str, str]) -> FrozenTrial:
    """The trial as a copy of its study stores it: the same, but for the checkpoint copied under a new
    artifact id (`new_ids`: old -> new), in its record and in Optuna's artifact entry (optuna-dashboard)."""
    copied = FrozenTrial(
        number=trial.number,
        state=trial.state,
        value=None,
        values=trial.values,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=dict(trial.user_attrs),
        system_attrs=dict(trial.system_attrs),
        intermediate_values=trial.intermediate_values,
        trial_id=trial._trial_id,
    )
    old = TrialRecord.read(trial).artifact_id
    if old is not None and old in new_ids:
        copied.user_attrs["artifact_id"] = new_ids[old]
        entry = copied.system_attrs.pop(ARTIFACT_ATTR_PREFIX + old, None)
        if isinstance(entry, str):  # Optuna's ArtifactMeta as JSON
            import json

            entry = json.dumps({**json.loads(entry), "artifact_id": new_ids[old]})
        if entry is not None:
            copied.system_attrs[ARTIFACT_ATTR_PREFIX + new_ids[old]] = entry
    return copied


@dataclass(frozen=True)
class TrialRecord:
    """A trial's user attributes: what it trained, how far, how well, and where its checkpoint is."""

    model_type: str | None = None
    worker: str | None = None  # host:pid
    # where it ran (sweep.run.machine): the same seed trains another model on another processor or torch
    host: str | None = None
    processor: str | None = None  # the CPU's model or the GPU's name
    device: str | None = None  # cpu, cuda:0, ...
    versions: dict[str, str] = field(default_factory=dict)  # torch, optuna, digitsum-sweep
    checkpoint: str | None = None  # the checkpoint's path, in studies made before artifacts
    artifact_id: str | None = None  # the best-epoch checkpoint's Optuna artifact (kept trials only)
    num_threads: int = 0  # torch threads: results depend on it, so `sweep rerun` reuses it
    epochs_run: int = 0
    seconds_per_epoch: float | None = None  # training and scoring, per epoch run
    train_seconds: float | None = None  # the training passes alone, over every epoch run
    epoch_to_target: int | None = None  # the first epoch whose validation exact match reached the target
    seconds_to_target: float | None = None  # training seconds up to that epoch; None: never reached
    n_parameters: int | None = None
    best_epoch: int | None = None
    val_exact_match: float | None = None  # at the best epoch
    val_by_length: dict[str, float] = field(default_factory=dict)
    val_curve: list[float] = field(default_factory=list)  # per epoch, where Optuna keeps no curve (several objectives)
    probe_exact_match: float | None = None
    probe_by_length: dict[str, float] = field(default_factory=dict)
    # the probe over its rows whose sum occurs in the training rows (no ceiling from unseen sums)
    probe_in_range_exact_match: float | None = None
    probe_in_range_by_length: dict[str, float] = field(default_factory=dict)
    pruned_reason: str | None = None
    fail_reason: str | None = None
    surplus: bool = False  # asked for when the budget was already taken; not a real trial
    interrupted: bool = False  # stopped by Ctrl-C or SIGTERM (failed, and queued again with the same parameters)
    # with train.n_seeds > 1: each seed's outcome by seed (RerunRecord's fields but trial and seed);
    # the trial's own fields above hold their aggregate (StudyMeta.seed_aggregate), its checkpoint the first seed's
    per_seed: dict[str, dict[str, Any]] = field(default_factory=dict)
    # a pbt member's hyperparameters: [{epoch, params}], at the start (epoch 0) and at each change; and
    # whose weights it took at each exploit: [{epoch, from_trial}] (sweep.run.pbt)
    schedule: list[dict[str, Any]] = field(default_factory=list)
    lineage: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None  # a retry that went on from a stopped run's state: the epoch it was at
    resume_id: str | None = None  # a stopped trial's training state, for its retry (sweep.run.resume)

    @classmethod
    def read(cls, trial: FrozenTrial) -> TrialRecord:
        attrs = trial.user_attrs
        return cls(**{f.name: attrs[f.name] for f in dataclasses.fields(cls) if f.name in attrs})


TRIAL_KEYS = frozenset(f.name for f in dataclasses.fields(TrialRecord))


def write_pbt_state(study: optuna.Study, state: dict[str, Any] | None) -> None:
    """Record (or, with None, clear) the study's pbt population state (StudyMeta.pbt_state)."""
    study.set_user_attr("pbt_state", state)


def write_trial(trial: optuna.Trial, **values: Any) -> None:
    """Store fields of the trial's record; a name that is not a `TrialRecord` field is a bug."""
    unknown = set(values) - TRIAL_KEYS
    if unknown:
        raise KeyError(f"not TrialRecord fields: {sorted(unknown)}")
    for name, value in values.items():
        trial.set_user_attr(name, value)


def model_type(trial: FrozenTrial) -> str:
    """The trial's model type: recorded, else its parameter, else queued (a retry not yet started)."""
    return TrialRecord.read(trial).model_type or str(param_or_queued(trial, MODEL_TYPE_KEY) or "?")


def param_or_queued(trial: FrozenTrial, name: str) -> Any:
    """A parameter's value, or the value queued for it by `enqueue_trial` (Optuna's ``fixed_params``)."""
    if name in trial.params:
        return trial.params[name]
    return trial.system_attrs.get("fixed_params", {}).get(name)


def queued_or_tried(study: optuna.Study, params: dict[str, Any]) -> bool:
    """Whether a trial was queued with exactly these params (Optuna's ``fixed_params``, which a queued
    trial keeps after it ran), or drew them all itself: what ``enqueue_trial(skip_if_exists=True)`` skips."""
    for trial in study.get_trials(deepcopy=False):
        given = trial.system_attrs.get("fixed_params", trial.params)
        if given.keys() == params.keys() and all(_same(given[k], v) for k, v in params.items()):
            return True
    return False


def _same(stored: Any, value: Any) -> bool:
    if isinstance(value, float) and isinstance(stored, (int, float)) and not isinstance(stored, bool):
        return math.isclose(stored, value, rel_tol=1e-12, abs_tol=0.0)
    return type(stored) is type(value) and stored == value


def trials_table(study: optuna.Study) -> Any:
    """Every trial as a pandas DataFrame: number, value, state, params, the record's keys, times."""
    attrs = ("number", "value", "state", "params", "user_attrs", "datetime_start", "datetime_complete", "duration")
    return study.trials_dataframe(attrs=attrs)
