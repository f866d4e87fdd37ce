"""Where studies live: Optuna storages (SQLite, PostgreSQL, a journal file), the records this toolkit
keeps on studies and trials (the one owner of the stored format), and the artifact store of checkpoints."""

from sweep.store.artifacts import ArtifactError, location_for, open_store, store_for
from sweep.store.records import RerunRecord, StudyMeta, TrialRecord, read_reruns, write_trial
from sweep.store.storage import StorageError, close_storage, load_study, open_existing, open_storage, safe_url

__all__ = [
    "ArtifactError",
    "RerunRecord",
    "StorageError",
    "StudyMeta",
    "TrialRecord",
    "close_storage",
    "load_study",
    "location_for",
    "open_existing",
    "open_storage",
    "open_store",
    "read_reruns",
    "safe_url",
    "store_for",
    "write_trial",
]
