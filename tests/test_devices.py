"""sweep.run.devices: workers placed round-robin over GPUs, each seeing only its own; on a machine
without those GPUs, one line. The device list is replaced at its one boundary (`cuda_devices`)."""

from __future__ import annotations

import re

import pytest
from sweep_helpers import assert_one_error_line, run_cli, write_spec

from digitsum.errors import UsageError
from sweep.run import devices
from sweep.run.devices import device_of, parse_devices, physical, visible


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(devices, "cuda_devices", lambda: [f"cuda:{i}" for i in range(4)])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_workers_go_round_robin_over_the_devices_and_each_sees_only_its_own(four_gpus):
    assert parse_devices("auto") == ("cuda:0", "cuda:1", "cuda:2", "cuda:3")
    placed = parse_devices("cuda:1, cuda:3")
    assert [device_of(placed, worker) for worker in range(5)] == ["cuda:1", "cuda:3", "cuda:1", "cuda:3", "cuda:1"]
    assert [visible(device_of(placed, worker)) for worker in range(2)] == [
        {"CUDA_VISIBLE_DEVICES": "1"},
        {"CUDA_VISIBLE_DEVICES": "3"},
    ]


def test_under_a_scheduler_that_shows_some_gpus_a_worker_gets_the_one_it_was_placed_on(four_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # as Slurm's --gpus sets it: torch sees cuda:0 and cuda:1
    assert visible("cuda:1") == {"CUDA_VISIBLE_DEVICES": "7"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")  # inside that worker, its cuda:0 is the machine's 7
    assert physical("cuda:0") == "cuda:7" and physical("cpu") == "cpu"


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("cuda:4", "this machine has no cuda:4 (CUDA devices here: cuda:0, cuda:1, cuda:2, cuda:3)"),
        ("gpu0", "expected auto or a list like cuda:0,cuda:1"),
        ("cuda:0,cuda:0", "a device is named twice"),
        (",", "expected auto or a list like cuda:0,cuda:1"),
    ],
)
def test_devices_this_machine_lacks_are_one_line(four_gpus, given, said):
    with pytest.raises(UsageError, match=re.escape(said)):
        parse_devices(given)


def test_on_a_machine_without_gpus_devices_is_one_line_and_exit_2_with_nothing_stored(tmp_path):
    if devices.cuda_devices():
        pytest.skip("this machine has CUDA devices")
    for given in ("auto", "cuda:0,cuda:1"):
        line = assert_one_error_line(run_cli(tmp_path, write_spec(tmp_path), "--devices", given))
        assert "leave --devices out to train on the CPU" in line
    assert not (tmp_path / "s.db").exists()


def test_a_spec_whose_train_device_this_machine_lacks_is_one_line_before_any_trial(tmp_path):
    if devices.cuda_devices():
        pytest.skip("this machine has CUDA devices")
    spec = write_spec(tmp_path, fixed={"train.n_epochs": 1, "train.device": "cuda"})
    line = assert_one_error_line(run_cli(tmp_path, spec))
    assert "fixed.train.device 'cuda': CUDA is not available on this machine" in line
    assert not (tmp_path / "s.db").exists()  # refused before the storage was opened


def test_a_study_made_for_other_machines_is_not_refused_for_this_ones_lack_of_gpus(tmp_path):
    # `sweep launch slurm` makes the study on a login node; the spec's GPUs are the compute nodes'
    from sweep.run.plan import RunOptions, plan_run
    from sweep.store.storage import close_study

    spec = write_spec(tmp_path, fixed={"train.n_epochs": 1, "train.device": "cuda"})
    options = RunOptions(storage=f"sqlite:///{tmp_path / 's.db'}", artifacts=str(tmp_path / "ckpt"), workers=64)
    plan, study = plan_run(spec, options, trains_here=False)
    close_study(study)
    assert plan.study_name == "tiny" and (tmp_path / "s.db").is_file()
