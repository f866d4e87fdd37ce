"""Scoring checkpoints (digitsum.evaluation): rows of any length read and scored, and the length curve,
through `sweep evaluate` and `sweep.api`."""

from __future__ import annotations

import json

import pytest
from sweep_helpers import invoke

from digitsum.data import make_in_range_rows, write_csv
from digitsum.evaluation import LengthCurve

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    """Two seeds of a small linear RNN trained on lengths 1-2 (sums 0-18), one epoch."""
    folder = tmp_path_factory.mktemp("curve")
    result = invoke(
        "train", "model.model_type=lrnn", "model.hidden_size=8", "model.head_size=16", "model.embedding_dim=0",
        "train.lengths=1-2", "train.n_epochs=1", "train.n_seeds=2", "train.device=cpu", "train.num_threads=1",
        f"train.log_path={folder}", "train.run_name=r", "--no-tensorboard",
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout + result.stderr
    return folder / "r"


@pytest.mark.parametrize("length", [19, 20, 100, 1000])
def test_a_long_row_is_read_and_scored(seeds_run, tmp_path, length):
    path = tmp_path / "long.csv"
    write_csv(make_in_range_rows([length], range(0, 19), sample=20, seed=1), path)
    assert invoke("evaluate", seeds_run / "seed-0" / "best.pt", path).exit_code == 0
    result = invoke("evaluate", seeds_run, path, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    per_seed = json.loads(result.stdout)["per_seed"]
    assert set(per_seed) == {"0", "1"}
    assert per_seed["0"]["rows_by_length"] == {str(length): 20}
    assert per_seed["0"]["in_range"]["rows_by_length"] == {str(length): 20}  # sums <= 18: all in range


def test_a_csv_row_of_1000_digits_written_by_sweep_data_is_read(seeds_run, tmp_path):
    path = tmp_path / "d.csv"
    made = invoke("data", path, "--lengths", "1000", "--sums", "0-18", "--sample", "3")
    assert made.exit_code == 0, made.stdout
    assert [len(line.split(",")[0]) for line in path.read_text().splitlines()] == [1000] * 3
    assert invoke("evaluate", seeds_run, path).exit_code == 0


def test_predict_answers_a_long_input(seeds_run):
    result = invoke("predict", seeds_run / "seed-0" / "best.pt", "9" * 50 + "1" * 50, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)[0]["expected"] == "500"


def test_the_length_curve_per_seed(seeds_run):
    from sweep import api

    curve = api.length_curve(seeds_run, "3,20,100", sample=200, seed=4, device="cpu")
    assert curve.lengths == [3, 20, 100] and curve.seeds == [0, 1] and curve.sums == list(range(19))
    assert all(len(values) == 3 and all(0 <= v <= 1 for v in values) for values in curve.exact_match)
    again = api.length_curve(seeds_run, "3,20,100", sample=200, seed=4, device="cpu")
    assert again.exact_match == curve.exact_match  # seeded strings


def test_the_length_curve_on_the_command_line(seeds_run):
    result = invoke("evaluate", seeds_run, "--lengths", "3,20", "--sample", "100")
    assert result.exit_code == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "100 strings per length" in lines[0] and "(sums 0-18)" in lines[0]
    assert lines[1].split() == ["length", "seed", "0", "seed", "1", "mean", "worst"]
    assert lines[2].split()[0] == "3" and lines[3].split()[0] == "20"
    assert lines[-1].startswith("holds >= 99% up to: seed 0: ")
    shown = json.loads(invoke("evaluate", seeds_run, "--lengths", "3,20", "--sample", "100", "--json").stdout)
    assert set(shown["per_seed"]) == {"0", "1"} and list(shown["per_seed"]["0"]["by_length"]) == ["3", "20"]


def test_evaluate_takes_a_csv_or_lengths(seeds_run, tmp_path):
    neither = invoke("evaluate", seeds_run)
    assert neither.exit_code == 2 and "give a DATA.csv to score, or --lengths" in neither.stderr
    both = invoke("evaluate", seeds_run, tmp_path / "x.csv", "--lengths", "5")
    assert both.exit_code == 2 and "(not both)" in both.stderr
    bad = invoke("evaluate", seeds_run, "--lengths", "5-3")
    assert bad.exit_code == 2 and "range 5-3 is empty" in bad.stderr


def test_holds_up_to_is_the_longest_length_every_shorter_one_holds():
    curve = LengthCurve(
        [5, 10, 20, 50], [0, 1, 2], [[1.0, 0.995, 0.97, 0.999], [0.98, 1.0, 1.0, 1.0], [1.0] * 4], 10, [], 0.0
    )
    assert curve.holds_up_to() == [10, None, 50]
    assert curve.holds_up_to(0.96) == [50, 50, 50]
