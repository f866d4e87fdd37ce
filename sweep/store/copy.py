"""Copy a study to another storage and artifact store (`sweep copy`): its trials (numbers, states,
parameters, values, curves, records, queued retries), study attributes (StudyMeta, so the copy resumes
with the same fingerprint; seed reruns; optuna-dashboard's note) and checkpoints.

What Optuna's `copy_study` does, with two changes. Checkpoints are copied under new artifact ids, and
each trial's record and artifact entry follow: the copy owns its checkpoints, even in the same store,
so `sweep rm` of one study, or a better trial of one, never removes the other's. And a RUNNING trial
is copied only if its worker is dead (silent past the grace period): the copy's first worker fails it
and queues it again, as it does any dead worker's trial. A copy that fails midway is deleted again.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from digitsum.errors import UsageError
from sweep.store.artifacts import ArtifactError, new_study_location, open_store, store_for
from sweep.store.queries import live_trials, read_trials
from sweep.store.records import (
    StudyMeta,
    TrialRecord,
    copied_trial,
    copy_study_attrs,
    read_reruns,
)
from sweep.store.storage import (
    StorageError,
    load_study,
    open_existing,
    safe_url,
    storage_error,
    storage_file,
    study_names,
)


@dataclass(frozen=True)
class Copied:
    """What `copy_study` copied, for the command's lines."""

    name: str
    to_name: str
    states: dict[str, int]  # trials copied, by state (RUNNING: a dead worker's, retried by the copy's workers)
    reruns: int
    checkpoints: int  # copied into the destination's artifact store
    removed: int  # checkpoints gone from the source's store already (a better trial finished)
    artifacts: str  # the copy's artifact store, recorded on it
    spec_path: str  # the spec the study was made with: `sweep run` resumes the copy with it

    @property
    def trials(self) -> int:
        return sum(self.states.values())


@dataclass
class _Written:
    """What a copy has put at its destination so far, to take back if it fails."""

    storage: optuna.storages.BaseStorage
    name: str
    store: Any
    study_made: bool = False
    artifact_ids: list[str] = field(default_factory=list)


def copy_study(
    name: str,
    from_url: str | None,
    to_url: str,
    *,
    to_name: str | None = None,
    artifacts: str | None = None,
    to_artifacts: str | None = None,
) -> Copied:
    """Copy study `name` from the storage `from_url` (and its artifact store) to `to_url` as `to_name`."""
    to_name = to_name or name
    source_storage = open_existing(from_url)
    study = load_study(name, source_storage)
    _refuse_onto_itself(from_url, to_url, name, to_name)
    _refuse_live_trials(source_storage, study)
    trials = read_trials(study)
    has_checkpoints = any(TrialRecord.read(t).artifact_id for t in trials)
    source_store = store_for(artifacts, study, from_url) if has_checkpoints else None
    target = open_existing(to_url, create=True)
    if to_name in study_names(target):
        raise StorageError(
            f"a study named {to_name!r} is already in {safe_url(to_url)}; give another name with --to-name, "
            f"or delete that one first (sweep rm {to_name} --storage URL)"
        )
    location = new_study_location(to_artifacts, to_url, "--to-artifacts")
    written = _Written(target, to_name, open_store(location, create=True))
    try:
        new_ids, removed = _copy_checkpoints(trials, source_store, written)
        _write_study(study, source_storage, trials, new_ids, written, location)
    except BaseException as error:
        _take_back(written, error, to_url)
        if isinstance(error, UsageError) or storage_error(error) is not None:
            said = str(error) if isinstance(error, UsageError) else f"the copy failed: {_reason(error)}"
            where = safe_url(to_url)
            raise StorageError(f"{said} (the partial copy was deleted: nothing is left at {where})") from None
        raise
    states = Counter(t.state.name for t in trials)
    spec_path = StudyMeta.read(study).spec_path
    return Copied(name, to_name, dict(states), len(read_reruns(study)), len(new_ids), removed, location, spec_path)


def same_storage(first: str | None, second: str | None) -> bool:
    """Do two storage URLs name one storage? Files are compared by their resolved paths."""
    from sweep.store.storage import default_url

    first, second = first or default_url(), second or default_url()
    files = storage_file(first), storage_file(second)
    if files[0] is not None and files[1] is not None:
        return Path(files[0]).resolve() == Path(files[1]).resolve()
    return first == second


def _refuse_onto_itself(from_url: str | None, to_url: str, name: str, to_name: str) -> None:
    if to_name == name and same_storage(from_url, to_url):
        raise StorageError(
            f"study {name!r} would be copied onto itself (--to is its own storage); give another storage, "
            "or a new name with --to-name"
        )


def _refuse_live_trials(storage: optuna.storages.BaseStorage, study: optuna.Study) -> None:
    """A worker still on the study would finish trials the copy never gets."""
    live = live_trials(storage, study)
    if live:
        shown = ", ".join(map(str, live[:5])) + (", ..." if len(live) > 5 else "")
        raise StorageError(
            f"study {study.study_name!r} has {len(live)} running trial(s) ({shown}) whose worker may still be at "
            "work; stop its workers (Ctrl-C) and copy then (a killed worker's trial is copied once its heartbeat "
            "has been silent past the grace period, 40 s by default)"
        )


def _copy_checkpoints(trials: list[FrozenTrial], source: Any, written: _Written) -> tuple[dict[str, str], int]:
    """Each trial's checkpoint, read from the source's store and written to the destination's under a
    new id; the new ids by old id, and how many had already been removed from the source's store."""
    new_ids: dict[str, str] = {}
    removed = 0
    for trial in trials:
        old = TrialRecord.read(trial).artifact_id
        if old is None or old in new_ids:
            continue
        new = _copy_checkpoint(source, old, written, trial.number)
        if new is None:
            removed += 1
        else:
            new_ids[old] = new
    return new_ids, removed


def _copy_checkpoint(source: Any, artifact_id: str, written: _Written, number: int) -> str | None:
    """One checkpoint copied under a new id; None if the source's store no longer has it."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        reader = source.open_reader(artifact_id)
    except (ArtifactNotFound, FileNotFoundError):
        return None
    except Exception as error:  # a refused bucket, an unreadable folder
        reason = _reason(error)
        raise ArtifactError(f"cannot read trial {number}'s checkpoint from the source's store: {reason}") from None
    new_id = str(uuid.uuid4())
    try:
        with contextlib.closing(reader):
            written.store.write(new_id, reader)
    except Exception as error:  # a full disk, a refused bucket
        raise ArtifactError(f"cannot store trial {number}'s checkpoint at the destination: {_reason(error)}") from None
    written.artifact_ids.append(new_id)
    return new_id


def _write_study(
    study: optuna.Study,
    source_storage: optuna.storages.BaseStorage,
    trials: list[FrozenTrial],
    new_ids: dict[str, str],
    written: _Written,
    location: str,
) -> None:
    """The copy itself: Optuna's `copy_study`, with the trials' checkpoints at their new ids."""
    storage = written.storage
    try:
        study_id = storage.create_new_study(study.directions, written.name)
    except optuna.exceptions.DuplicatedStudyError:  # made by someone else since we looked: not ours to delete
        raise StorageError(f"a study named {written.name!r} was just made at the destination; copy again") from None
    written.study_made = True
    for key, value in source_storage.get_study_system_attrs(study._study_id).items():
        storage.set_study_system_attr(study_id, key, value)
    copy_study_attrs(study, storage, study_id, location)
    # In number order into a new study: each copied trial gets its source's number (retries, reruns and
    # checkpoint names refer to trials by number).
    for trial in sorted(trials, key=lambda t: t.number):
        storage.create_new_trial(study_id, template_trial=copied_trial(trial, new_ids))


def _take_back(written: _Written, error: BaseException, to_url: str) -> None:
    """Delete what a failed copy put at its destination: the study and the checkpoints copied so far."""
    with contextlib.suppress(Exception):
        for artifact_id in written.artifact_ids:
            written.store.remove(artifact_id)
    if not written.study_made:
        return
    try:
        optuna.delete_study(study_name=written.name, storage=written.storage)
    except Exception:
        raise StorageError(
            f"the copy failed ({_reason(error)}), and its partial study {written.name!r} could not be deleted "
            f"from {safe_url(to_url)}: delete it with `sweep rm {written.name} --storage URL --yes`"
        ) from None


def _reason(error: BaseException) -> str:
    cause = storage_error(error)
    text = str(getattr(cause, "orig", None) or cause or error)
    return " ".join(text.split())[:200] or type(error).__name__
