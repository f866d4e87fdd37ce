"""sweep.run.outcome: trials (and `sweep train`) of K seeds trained at once, end to end: each trial's value
over its seeds, its record, best, report, reruns and the dashboard."""

from __future__ import annotations

import pytest

from digitsum.config import Config, ModelConfig, TrainConfig


def tiny(model_type: str, **train) -> Config:
    settings = dict(lengths="1-2", n_epochs=3, batch_size=16, learning_rate=0.01, device="cpu", num_threads=1)
    return Config(
        ModelConfig(model_type=model_type, hidden_size=12, embedding_dim=6), TrainConfig(**{**settings, **train})
    )


def test_sweep_train_with_seeds_says_each_seed_and_the_spread(tmp_path, monkeypatch):
    from sweep_helpers import assert_one_error_line, invoke

    monkeypatch.chdir(tmp_path)
    args = ["train.lengths=1-2", "train.n_epochs=2", "model.hidden_size=8", "train.device=cpu", "train.num_threads=1"]
    result = invoke("train", *args, "train.n_seeds=2", "model.model_type=gru")
    assert result.exit_code == 0, result.output
    assert "val exact per seed" in result.output and "seed 1: best val exact match" in result.output
    assert "best val exact match over 2 seeds:" in result.output and "worst" in result.output
    assert (tmp_path / "runs" / "run" / "seed-1" / "best.pt").is_file()
    probed = invoke("train", *args, "train.n_seeds=2", "train.run_name=x", "--probe", "3")
    assert probed.exit_code == 0, probed.output
    assert "probe mean" in probed.output and "(in range" in probed.output
    line = assert_one_error_line(invoke("train", *args, "train.n_seeds=2", "train.run_name=y", "--probe", "2"))
    assert "probe length(s) 2 are trained on" in line


def test_a_spec_takes_seeds_in_fixed_only(tmp_path):
    from sweep_helpers import assert_spec_mistake, spec_dict

    space = {**spec_dict()["space"], "train.n_seeds": {"choices": [1, 3]}}
    assert_spec_mistake(tmp_path, {"space": space}, "space.train.n_seeds", "give it in fixed")
    assert_spec_mistake(tmp_path, {"seed_aggregate": "median"}, "seed_aggregate", "expected one of mean, min")


# ---------------------------------------------------------------------------------------------
# A study whose trials train 3 seeds each, end to end: run, best, report, rerun, dashboard


@pytest.fixture(scope="module")
def seeds_study(tmp_path_factory):
    """A 3-trial study, 3 seeds a trial, the worst seed as the value, pruned by the median rule."""
    from sweep_helpers import checkpoint_dir, invoke, spec_dict, storage_url, write_spec

    folder = tmp_path_factory.mktemp("seeds-study")
    fixed = {**spec_dict()["fixed"], "train.n_seeds": 3, "train.n_epochs": 8, "train.num_threads": 1}
    spec = spec_dict(
        name="seeds",
        n_trials=3,
        fixed=fixed,
        seed_aggregate="min",
        pruner={"type": "median", "n_startup_trials": 1},
        # drawn among strings whose sum occurs in training: at 20 digits a uniform one almost never does
        data={"lengths": [1, 2], "val_fraction": 0.2, "probe_lengths": [3, 20], "probe_sample": 50,
              "probe_in_range": True},
    )  # fmt: skip
    url = storage_url(folder)
    result = invoke("run", write_spec(folder, spec=spec), "--storage", url, "--artifacts", checkpoint_dir(folder))
    assert result.exit_code == 0, result.output
    return folder, url


def test_check_says_how_many_seeds_a_trial_trains(tmp_path):
    from sweep_helpers import invoke, spec_dict, write_spec

    fixed = {**spec_dict()["fixed"], "train.n_seeds": 4}
    result = invoke("check", write_spec(tmp_path, spec=spec_dict(fixed=fixed, seed_aggregate="min")))
    assert result.exit_code == 0, result.output
    assert "seeds: each trial trains 4 at once (seeds train.seed to train.seed + 3); its value is their min" in (
        result.output
    )


def test_each_trial_reports_its_worst_seed_and_records_every_seed(seeds_study):
    from optuna.trial import TrialState
    from sweep_helpers import trials

    _, url = seeds_study
    complete = [t for t in trials(url, "seeds") if t.state == TrialState.COMPLETE]
    assert complete
    for trial in complete:
        per_seed = trial.user_attrs["per_seed"]
        assert sorted(per_seed) == ["0", "1", "2"]
        assert trial.value == min(run["value"] for run in per_seed.values())
        assert trial.user_attrs["val_exact_match"] == min(run["val_exact_match"] for run in per_seed.values())
        assert trial.user_attrs["probe_exact_match"] == min(run["probe_exact_match"] for run in per_seed.values())
        # each seed is charged a third of the shared computation: the trial's cost is one seed's
        assert trial.user_attrs["train_seconds"] == pytest.approx(
            sum(run["train_seconds"] for run in per_seed.values()) / 3, rel=0.01, abs=1e-3
        )
        assert len(trial.intermediate_values) == trial.user_attrs["epochs_run"]
        # every probe row is in range: the in-range curve is the whole probe's, per seed and over seeds
        curves = [run["probe_in_range_by_length"] for run in per_seed.values()]
        assert all(list(curve) == ["3", "20"] for curve in curves)
        assert trial.user_attrs["probe_in_range_by_length"] == {n: min(c[n] for c in curves) for n in ("3", "20")}
        assert trial.user_attrs["probe_in_range_exact_match"] == trial.user_attrs["probe_exact_match"]


def test_best_json_keys_each_seed(seeds_study):
    import json

    from sweep_helpers import invoke

    _, url = seeds_study
    result = invoke("best", "seeds", "--storage", url, "--json")
    assert result.exit_code == 0, result.output
    best = json.loads(result.stdout)
    assert sorted(best["per_seed"]) == ["0", "1", "2"]
    assert best["value"] == min(run["value"] for run in best["per_seed"].values())
    assert best["over_seeds"]["seeds"] == [0, 1, 2]


def test_the_report_shows_each_trial_over_its_seeds_without_reruns(seeds_study):
    from sweep_helpers import invoke, load

    folder, url = seeds_study
    out = folder / "report.html"
    result = invoke("report", "seeds", "--storage", url, "--out", out)
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "No seed reruns stored yet" not in page
    assert "(3 seeds)" in page and "+-" in page
    assert "How far the best trial counts" in page  # the length curve: one line per seed
    best = load(url, "seeds").best_trial.number
    assert all(f"trial {best}, seed {s}" in page for s in (0, 1, 2))


def test_rerun_trains_more_seeds_at_once_beside_the_trials_own(seeds_study):
    from sweep_helpers import invoke, load

    from sweep.store.records import read_reruns, seed_runs

    _, url = seeds_study
    study = load(url, "seeds")
    best = study.best_trial.number
    result = invoke("rerun", "seeds", best, "--seeds", "1,3,4", "--storage", url, "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "2 to train, 1 trained already" in result.output  # seed 1: the trial trained it itself
    study = load(url, "seeds")
    reruns = read_reruns(study)
    assert sorted(r.seed for r in reruns if r.trial == best) == [3, 4]
    assert [r.seed for r in seed_runs(study.trials[best], reruns)] == [0, 1, 2, 3, 4]


@pytest.mark.processes
def test_the_dashboard_serves_a_study_of_seeds(seeds_study):
    from browser import get_json, served_dashboard

    folder, url = seeds_study
    with served_dashboard(folder, url) as base:
        (listed,) = [s for s in get_json(f"{base}/api/studies")["study_summaries"] if s["study_name"] == "seeds"]
        detail = get_json(f"{base}/api/studies/{listed['study_id']}")
        shown = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert shown and all(any(a["key"] == "per_seed" for a in t["user_attrs"]) for t in shown)
        assert all(t["intermediate_values"] for t in shown)  # the value over seeds, every epoch
        assert any(t["artifacts"] for t in shown)  # the best trial's checkpoint (its first seed's model)


def test_evaluate_scores_every_seed_of_a_run_at_once(tmp_path):
    import json

    from sweep_helpers import assert_one_error_line, invoke

    from digitsum.data import make_rows, write_csv
    from digitsum.runs import train_run
    from sweep import api

    config = tiny("lstm", n_seeds=3, n_epochs=4, log_path=str(tmp_path), run_name="r")
    _, run_dir = train_run(config)
    csv = tmp_path / "three.csv"
    write_csv(make_rows([3]), csv)
    together = api.evaluate_seeds(run_dir, csv, "cpu")
    assert together.seeds == [0, 1, 2]
    for seed, scored in zip(together.seeds, together.accuracies, strict=True):
        alone = api.evaluate(run_dir / f"seed-{seed}" / "best.pt", csv, "cpu").accuracy
        assert scored == alone
    shown = invoke("evaluate", run_dir, csv, "--json", "--device", "cpu")
    assert shown.exit_code == 0, shown.output
    printed = json.loads(shown.stdout)
    assert set(printed["per_seed"]) == {"0", "1", "2"} and printed["worst"] == min(
        a.exact_match for a in together.accuracies
    )
    assert "is a folder, not a checkpoint file" in assert_one_error_line(invoke("evaluate", tmp_path, csv))


def test_several_objectives_take_the_seeds_mean_and_one_seeds_share_of_the_cost(tmp_path):
    from sweep_helpers import run_cli, spec_dict, storage_url, trials, write_spec

    fixed = {**spec_dict()["fixed"], "train.n_seeds": 2, "train.num_threads": 1}
    objectives = [{"metric": "val_exact_match"}, {"metric": "train_seconds"}]
    spec = spec_dict(name="costs", fixed=fixed, objectives=objectives, n_trials=2)
    result = run_cli(tmp_path, write_spec(tmp_path, spec=spec))
    assert result.exit_code == 0, result.output
    for trial in trials(storage_url(tmp_path), "costs"):
        per_seed = trial.user_attrs["per_seed"]
        accuracy, seconds = trial.values
        assert accuracy == pytest.approx(sum(run["value"] for run in per_seed.values()) / 2)
        assert seconds == trial.user_attrs["train_seconds"]
        assert seconds == pytest.approx(sum(run["train_seconds"] for run in per_seed.values()) / 2, abs=2e-4)
        assert [run["values"]["train_seconds"] for run in per_seed.values()] == [
            run["train_seconds"] for run in per_seed.values()
        ]
