"""Deleting a study with its checkpoints (`sweep rm`): its trials from the storage, each kept checkpoint
from the artifact store, and the per-study folders of a study made before artifacts, once empty."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import optuna

from sweep.store import artifacts as store_of
from sweep.store.records import StudyMeta, TrialRecord
from sweep.store.storage import load_study, open_existing


def remove_study(
    name: str, storage: str | None, artifacts: str | None, confirm: Callable[[str], bool] | None = None
) -> tuple[int, int] | None:
    """Delete a study and its checkpoints; ``confirm`` is asked first with what would go (None when it
    says no). Returns the numbers of trials and checkpoints deleted."""
    store = open_existing(storage)
    study = load_study(name, store)
    records = [TrialRecord.read(t) for t in study.get_trials(deepcopy=False)]
    stored = [r for r in records if r.artifact_id]
    files = [r for r in records if not r.artifact_id and r.checkpoint and Path(r.checkpoint).is_file()]
    if confirm is not None and not confirm(f"study {name!r} ({len(records)} trials) and its checkpoints"):
        return None
    population = StudyMeta.read(study).pbt_state  # a pbt population's state, while one trains
    states = [r.resume_id for r in records if r.resume_id]  # stopped trials' states, for retries not run yet
    artifact_store = store_of.store_for(artifacts, study, storage) if stored or population or states else None
    optuna.delete_study(study_name=name, storage=store)
    for record in stored + files:
        store_of.remove(artifact_store, record)
    for artifact_id in [*states, population["artifact_id"] if population else None]:
        store_of.remove_id(artifact_store, artifact_id)
    _remove_empty_folders([Path(r.checkpoint) for r in files if r.checkpoint], name)
    return len(records), len(stored) + len(files)


def _remove_empty_folders(checkpoints: list[Path], name: str) -> None:
    """The per-study checkpoint folders of a study made before artifacts, once empty."""
    for folder in {path.parent for path in checkpoints}:
        if folder.name == name and folder.is_dir() and not any(folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
