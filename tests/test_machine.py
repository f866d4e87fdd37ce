"""sweep.run.machine: each trial records where it ran; a worker on another torch or project says so."""

from __future__ import annotations

import csv
import json
import socket

import torch
from sweep_helpers import invoke, run_cli, storage_url, write_spec

from digitsum.device import processor_name
from sweep.run.machine import PROJECT, version_note, versions


def test_a_trial_records_its_host_processor_device_threads_and_versions_and_shows_them(tmp_path):
    run = run_cli(tmp_path, write_spec(tmp_path, n_trials=1), "--threads", "1")
    assert run.exit_code == 0, run.output
    shown = json.loads(invoke("best", "tiny", "--storage", storage_url(tmp_path), "--json").stdout)
    here = versions()
    assert here["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert shown["ran_on"] == {
        "host": socket.gethostname(),
        "processor": processor_name(torch.device("cpu")),
        "device": "cpu",
        "threads": 1,
        "versions": here,
    }
    exported = invoke("export", "tiny", "--storage", storage_url(tmp_path), "--out", tmp_path / "t.csv")
    assert exported.exit_code == 0, exported.output
    (row,) = csv.DictReader((tmp_path / "t.csv").open())
    assert row["user_attrs_host"] == socket.gethostname() and row["user_attrs_device"] == "cpu"
    assert json.loads(row["user_attrs_versions"].replace("'", '"')) == here


def test_a_worker_whose_torch_differs_from_the_studys_says_so_in_one_line(tmp_path):
    import optuna

    spec = write_spec(tmp_path, n_trials=1)
    assert run_cli(tmp_path, spec).exit_code == 0
    study = optuna.load_study(study_name="tiny", storage=storage_url(tmp_path))
    assert study.user_attrs["versions"] == versions()  # the study records what made it
    assert "was made with" not in run_cli(tmp_path, spec, "--trials", 2).stdout  # the same versions: nothing said
    study.set_user_attr("versions", {**versions(), "torch": "0.0.1"})  # as if made on another machine
    again = run_cli(tmp_path, spec, "--trials", 3)
    assert again.exit_code == 0, again.output
    said = [line for line in again.stdout.splitlines() if "was made with" in line]
    assert said == [version_note(study.user_attrs["versions"], "tiny")]
    assert said[0].startswith("note: study 'tiny' was made with torch 0.0.1; this worker runs torch ")


def test_only_torch_and_the_project_count_and_an_old_study_says_nothing():
    here = versions()
    assert version_note({**here, "optuna": "0.0"}, "s") is None  # Optuna does not compute the models
    assert version_note(None, "s") is None  # made before studies recorded versions
    assert PROJECT in version_note({**here, PROJECT: "0.0.1"}, "s")
