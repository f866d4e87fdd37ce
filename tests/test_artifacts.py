"""sweep.store.artifacts: where checkpoints are stored, and a study end to end on S3.

S3 is moto's server (`moto[server]` from PyPI, an S3-compatible HTTP endpoint) on 127.0.0.1, reached
by boto3 through AWS_ENDPOINT_URL as any S3 endpoint would be; skipped with the reason where moto
or boto3 is missing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import optuna
import pytest
from sweep_helpers import assert_one_error_line, invoke, load, storage_url, write_spec

from sweep.spec.objectives import best_trial
from sweep.store.artifacts import ArtifactError, default_location, fetch_record, location_for, open_store, remove
from sweep.store.records import TrialRecord

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def test_the_default_store_is_beside_the_storage_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SWEEP_STORAGE", raising=False)
    assert default_location(f"sqlite:///{tmp_path}/x/s.db") == str((tmp_path / "x" / "artifacts").resolve())
    assert default_location(f"journal:{tmp_path}/j.log") == str(tmp_path.resolve() / "artifacts")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no studies/ folder above: the per-user place
    assert default_location("postgresql+psycopg://u:p@127.0.0.1:1/db") == str(
        tmp_path / "data" / "digitsum-sweep" / "artifacts"
    )


def test_given_then_recorded_then_default(tmp_path):
    url = storage_url(tmp_path)
    study = optuna.create_study(storage=url, study_name="s")
    assert location_for("s3://b/p", study, url) == "s3://b/p"
    assert location_for("rel", study, url) == str(Path("rel").resolve())
    assert location_for(None, study, url) == default_location(url)  # records nothing yet
    study.set_user_attr("artifacts", "s3://recorded/x")
    assert location_for(None, study, url) == "s3://recorded/x"


def test_a_missing_artifact_says_what_happened(tmp_path):
    store = open_store(str(tmp_path / "a"), create=True)
    record = TrialRecord(artifact_id="0f0f0f0f-0000-0000-0000-000000000000")
    with pytest.raises(ArtifactError, match="removed when a better trial finished"):
        fetch_record(store, record, 3, tmp_path)
    remove(store, record)  # removing what is gone is a no-op
    with pytest.raises(ArtifactError, match="kept no checkpoint"):
        fetch_record(store, TrialRecord(), 4, tmp_path)
    legacy = TrialRecord(checkpoint=str(tmp_path / "gone.pt"))
    with pytest.raises(ArtifactError, match="not on this machine"):
        fetch_record(store, legacy, 5, tmp_path)


def test_an_unwritable_artifact_folder_is_refused_before_any_trial(tmp_path):
    (tmp_path / "a-file").write_text("not a folder\n")
    spec = write_spec(tmp_path)
    line = assert_one_error_line(
        invoke("run", spec, "--storage", storage_url(tmp_path), "--artifacts", tmp_path / "a-file" / "x")
    )
    assert "cannot write checkpoints" in line and "--artifacts" in line


# ---------------------------------------------------------------------------------------------
# S3, on a local S3-compatible server

HAS_S3 = importlib.util.find_spec("moto") is not None and importlib.util.find_spec("boto3") is not None


@pytest.fixture(scope="module")
def s3_server():
    if not HAS_S3:
        pytest.skip("moto[server] and boto3 are not installed; pip install -e .[dev,s3]")
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The usual AWS variables, pointed at the local server; a fresh bucket."""
    import boto3

    for name, value in {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket="sweeps")
    yield client
    for item in client.list_objects_v2(Bucket="sweeps").get("Contents", []):
        client.delete_object(Bucket="sweeps", Key=item["Key"])
    client.delete_bucket(Bucket="sweeps")


def keys(client) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket="sweeps").get("Contents", []))


@pytest.mark.processes
def test_a_study_on_s3_from_run_to_rm(s3, tmp_path, monkeypatch):
    url = storage_url(tmp_path)
    spec = write_spec(tmp_path)
    ran = invoke("run", spec, "--storage", url, "--artifacts", "s3://sweeps/team/tiny", "--threads", 1)
    assert ran.exit_code == 0, ran.stderr
    study = load(url, "tiny")
    best = best_trial(study)
    assert study.user_attrs["artifacts"] == "s3://sweeps/team/tiny"  # recorded: later commands find it
    assert keys(s3) == [f"team/tiny/{best.user_attrs['artifact_id']}"]  # the best trial's only, under the prefix
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    done = invoke("best", "tiny", "--storage", url, "--download", "models")
    assert done.exit_code == 0, done.stderr
    assert (elsewhere / "models" / f"trial-{best.number:05d}.pt").is_file()
    assert invoke("data", "d.csv", "--lengths", "2").exit_code == 0
    evaluated = invoke("evaluate", "tiny:best", "d.csv", "--json", "--storage", url)
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["n_rows"] == 100
    reported = invoke("report", "tiny", "--storage", url, "--out", "r.html")
    assert reported.exit_code == 0 and f"The best trial, {best.number} of tiny" in (elsewhere / "r.html").read_text()
    assert invoke("rm", "tiny", "--yes", "--storage", url).exit_code == 0
    assert keys(s3) == []


@pytest.mark.processes
def test_a_bucket_that_is_not_there_is_refused_before_any_trial(s3, tmp_path):
    url = storage_url(tmp_path)
    spec = write_spec(tmp_path)
    line = assert_one_error_line(
        invoke("run", spec, "--storage", url, "--artifacts", "s3://no-such-bucket/x", "--threads", 1)
    )
    assert "cannot use the artifact store s3://no-such-bucket/x" in line and "AWS_ENDPOINT_URL" in line
    assert load(url, "tiny").trials == []  # nothing trained


def test_s3_needs_a_bucket_name():
    from digitsum.errors import UsageError

    with pytest.raises(UsageError, match="give a bucket, like s3://my-bucket/sweeps"):
        open_store("s3://")
