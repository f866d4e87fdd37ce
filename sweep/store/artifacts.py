"""Checkpoints as Optuna artifacts: one store every machine of a study can reach.

A store is named by a location: a folder (Optuna's `FileSystemArtifactStore`; a shared mount for
many machines) or ``s3://BUCKET/PREFIX`` (`Boto3ArtifactStore`, configured by the usual AWS
variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL). A study
records its store's location when it is made; commands use that unless ``--artifacts`` says
otherwise. Studies made before artifacts recorded a checkpoint path instead; it is still read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from digitsum.errors import UsageError
from digitsum.files import atomic_path
from sweep.store.records import StudyMeta, TrialRecord

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts._protocol import ArtifactStore
    from optuna.trial import FrozenTrial

S3 = "s3://"


class ArtifactError(UsageError):
    """A checkpoint cannot be stored or fetched; the message says which and what to do."""


def default_location(storage_url: str | None) -> str:
    """Beside the storage file (SQLite, journal), else beside the default storage."""
    from sweep.store.storage import default_url, home_folder, storage_file

    path = storage_file(storage_url or default_url())
    folder = path.resolve().parent if path is not None else home_folder()
    return str(folder / "artifacts")


ENV_VAR = "SWEEP_ARTIFACTS"


def location_for(given: str | None, study: optuna.Study | None, storage_url: str | None) -> str:
    """``--artifacts`` if given, else the store the study recorded, else $SWEEP_ARTIFACTS, else the default."""
    if given:
        return _resolved(given)
    recorded = StudyMeta.read(study).artifacts if study is not None else None
    return recorded or _resolved(os.environ.get(ENV_VAR) or default_location(storage_url))


def new_study_location(given: str | None, storage_url: str | None, flag: str = "--artifacts") -> str:
    """Where a new study's checkpoints go (the study records it): `location_for` without a study.

    On a server storage (PostgreSQL, MySQL) the machines of a study share no disk, and a folder beside
    a storage file does not exist: the default would be a folder in the home of each machine, each
    holding its own trials' checkpoints. There the store must be given."""
    from sweep.store.storage import default_url, safe_url, storage_file

    url = storage_url or default_url()
    if not (given or os.environ.get(ENV_VAR)) and storage_file(url) is None and not url.startswith("sqlite"):
        raise ArtifactError(
            f"a new study on a server storage ({safe_url(url)}) needs a checkpoint store every machine reaches: "
            f"pass {flag} /shared/folder or s3://BUCKET/PREFIX, or set ${ENV_VAR} (without it each "
            "machine would keep its trials' checkpoints in its own home folder)"
        )
    return location_for(given, None, storage_url)


def where_checkpoints_go(study_name: str, storage_url: str | None, given: str | None) -> tuple[str, str]:
    """Where `sweep run` would store the study's checkpoints, and why there (for `sweep check`); a new
    study on a server storage without a store given raises `new_study_location`'s ArtifactError."""
    import optuna

    from sweep.store.storage import close_storage, default_url, open_storage, storage_file, study_names

    if given:
        return _resolved(given), "from --artifacts"
    url = storage_url or default_url()
    path = storage_file(url)
    recorded = None
    if path is None or path.is_file():  # a storage file not made yet holds no study: nothing to open
        storage = open_storage(url)
        try:
            if study_name in study_names(storage):
                recorded = StudyMeta.read(optuna.load_study(study_name=study_name, storage=storage)).artifacts
        finally:
            close_storage(storage)
    if recorded:
        return recorded, f"recorded by study {study_name!r}"
    location = new_study_location(None, url)
    return location, f"from ${ENV_VAR}" if os.environ.get(ENV_VAR) else "beside the storage file"


def _resolved(location: str) -> str:
    return location if location.startswith(S3) else str(Path(location).expanduser().resolve())


def store_for(given: str | None, study: optuna.Study | None, storage_url: str | None) -> Any:
    """The artifact store a command reads: `open_store` at `location_for`."""
    return open_store(location_for(given, study, storage_url))


def open_store(location: str, create: bool = False) -> Any:
    """The artifact store at `location`; a folder is made when `create` (for writing)."""
    if location.startswith(S3):
        return _s3_store(location)
    folder = Path(location)
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ArtifactError(
                f"cannot make the artifact folder {folder} ({error.strerror}); pass --artifacts DIR or s3://BUCKET/PREFIX"
            ) from None
    return _folder_store(folder)


def _folder_store(folder: Path) -> Any:
    """Optuna's folder store, writing each artifact to a temporary file first, then renaming it: a
    full disk or a killed worker leaves no half-written checkpoint under an artifact's name."""
    from optuna.artifacts import FileSystemArtifactStore

    class AtomicFolderStore(FileSystemArtifactStore):
        def write(self, artifact_id: str, content_body: IO[bytes]) -> None:
            path = Path(self._get_filepath(artifact_id))  # Optuna checks the id stays inside the folder
            with atomic_path(path) as tmp, tmp.open("wb") as file:
                shutil.copyfileobj(content_body, file)

    return AtomicFolderStore(folder)


def check_bucket(location: str) -> None:
    """Refuse, before any trial trains, a bucket that is missing or not ours to write."""
    store = open_store(location)
    inner = getattr(store, "store", store)
    try:
        inner.client.head_bucket(Bucket=inner.bucket)
    except Exception as error:
        raise ArtifactError(
            f"cannot use the artifact store {location} ({_reason(error)}); check the bucket's name and the "
            "AWS_* variables (AWS_ENDPOINT_URL for an S3-compatible server)"
        ) from None


def _s3_store(location: str) -> Any:
    bucket, _, prefix = location[len(S3) :].partition("/")
    if not bucket:
        raise UsageError(f"--artifacts {location!r}: give a bucket, like s3://my-bucket/sweeps")
    try:
        import boto3
    except ModuleNotFoundError:
        raise UsageError("--artifacts s3://... needs boto3; pip install -e .[s3]") from None
    from optuna.artifacts import Boto3ArtifactStore

    store = Boto3ArtifactStore(bucket, client=boto3.client("s3"))
    return _Prefixed(store, prefix.strip("/") + "/") if prefix.strip("/") else store


class _Prefixed:
    """An artifact store whose artifacts live under ``prefix`` (a folder of a bucket)."""

    def __init__(self, store: ArtifactStore, prefix: str) -> None:
        self.store, self.prefix = store, prefix

    def open_reader(self, artifact_id: str) -> IO[bytes]:
        return self.store.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id: str, content_body: IO[bytes]) -> None:
        self.store.write(self.prefix + artifact_id, content_body)  # type: ignore[arg-type]

    def remove(self, artifact_id: str) -> None:
        self.store.remove(self.prefix + artifact_id)


def checkpoint_name(trial_number: int) -> str:
    return f"trial-{trial_number:05d}.pt"


def upload(store: ArtifactStore, trial: optuna.Trial, path: Path) -> str:
    """Store a running trial's checkpoint as its artifact (listed by optuna-dashboard); its id."""
    from optuna.artifacts import upload_artifact

    try:
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
    except Exception as error:  # a full disk, a refused bucket: the trial fails with this reason
        raise ArtifactError(f"cannot store trial {trial.number}'s checkpoint: {_reason(error)}") from None


def upload_state(store: ArtifactStore, study: optuna.Study, path: Path) -> str:
    """Store a file of the study's own (a pbt population's state) as its artifact; its id."""
    from optuna.artifacts import upload_artifact

    try:
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)
    except Exception as error:  # a full disk, a refused bucket
        raise ArtifactError(f"cannot store the state of study {study.study_name!r}: {_reason(error)}") from None


def download_state(store: ArtifactStore, artifact_id: str, path: Path) -> None:
    from optuna.artifacts import download_artifact

    download_artifact(artifact_store=store, artifact_id=artifact_id, file_path=str(path))


def remove_id(store: ArtifactStore | None, artifact_id: str | None) -> None:
    """Remove an artifact by its id; one already gone is no error."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    if artifact_id and store is not None:
        with contextlib.suppress(ArtifactNotFound, FileNotFoundError):
            store.remove(artifact_id)


def remove(store: ArtifactStore | None, record: TrialRecord) -> None:
    """Remove a trial's checkpoint: its artifact, or the file of a study made before artifacts."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    if record.artifact_id and store is not None:
        with contextlib.suppress(ArtifactNotFound, FileNotFoundError):
            store.remove(record.artifact_id)
    elif record.checkpoint:
        Path(record.checkpoint).unlink(missing_ok=True)


def has_checkpoint(record: TrialRecord) -> bool:
    """Stored as an artifact, or (a study made before artifacts) a file on this machine."""
    return bool(record.artifact_id) or bool(record.checkpoint and Path(record.checkpoint).is_file())


def fetch(store: ArtifactStore, trial: FrozenTrial, folder: Path) -> Path:
    """The trial's checkpoint as a local file in `folder` (downloaded), or its legacy path."""
    return fetch_record(store, TrialRecord.read(trial), trial.number, folder)


def fetch_record(store: ArtifactStore | None, record: TrialRecord, number: int, folder: Path) -> Path:
    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    if record.artifact_id:
        if store is None:
            raise ArtifactError(f"trial {number}'s checkpoint is an artifact, and no artifact store was given")
        path = folder / checkpoint_name(number)
        try:
            download_artifact(artifact_store=store, artifact_id=record.artifact_id, file_path=str(path))
        except (ArtifactNotFound, FileNotFoundError):
            raise ArtifactError(
                f"trial {number}'s checkpoint is not in the artifact store {_store_text(store)}; it was removed "
                "when a better trial finished, or the study's store is elsewhere: pass it with --artifacts"
            ) from None
        except Exception as error:
            raise ArtifactError(f"cannot fetch trial {number}'s checkpoint: {_reason(error)}") from None
        return path
    if record.checkpoint and Path(record.checkpoint).is_file():
        return Path(record.checkpoint)
    if record.checkpoint:
        raise ArtifactError(
            f"trial {number}'s checkpoint {record.checkpoint} is not on this machine "
            "(the study was made before checkpoints were stored as artifacts)"
        )
    raise ArtifactError(
        f"trial {number} kept no checkpoint (keep_checkpoints: best keeps the best trial's only; "
        "`sweep rerun` trains it again)"
    )


@contextlib.contextmanager
def fetched(store: ArtifactStore | None, record: TrialRecord, number: int) -> Iterator[Path]:
    """`fetch_record` into a temporary folder that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="sweep-ckpt-") as folder:
        yield fetch_record(store, record, number, Path(folder))


def _store_text(store: Any) -> str:
    inner = getattr(store, "store", store)
    bucket = getattr(inner, "bucket", None)
    if bucket is not None:
        return f"{S3}{bucket}/{getattr(store, 'prefix', '')}"
    return str(getattr(inner, "_base_path", "?"))


def _reason(error: Exception) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__
