"""sweep.spec.model: study specs from YAML; every mistake is one SpecError naming the file and the key."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna
import pytest
import yaml
from sweep_helpers import (
    GRID_SPACE,
    PRUNER_BODIES,
    SAMPLER_BODIES,
    assert_one_error_line,
    assert_spec_mistake,
    run_cli,
    spec_dict,
    sweep_process,
    write_spec,
)

from sweep.spec import PRUNERS, SAMPLERS, Param, SpecError, check_study_name, load_spec, parse_spec

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

REPO = Path(__file__).resolve().parents[1]


def with_space(**params) -> dict:
    """The tiny spec's space with some parameters replaced or added (None removes one)."""
    space = dict(spec_dict()["space"])
    for key, body in params.items():
        key = key.replace("__", ".")
        if body is None:
            space.pop(key, None)
        else:
            space[key] = body
    return space


# ---------------------------------------------------------------------------------------------
# A good spec


def test_tiny_spec_parses(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    assert spec.name == "tiny"
    assert spec.path == str(tmp_path / "spec.yaml")
    assert spec.metric == "val_exact_match" and spec.value_from == "best"
    assert spec.n_trials == 2 and spec.timeout is None
    assert spec.keep_checkpoints == "best"
    assert [p.key for p in spec.space] == ["model.model_type", "model.hidden_size", "train.learning_rate"]
    model_type, hidden, rate = spec.space
    assert model_type.choices == ("rnn", "gru")
    assert hidden.is_int and (hidden.low, hidden.high) == (8, 16)
    assert not rate.is_int and rate.log
    # data and fixed values land in the base config
    assert spec.base.train.lengths == "1,2"
    assert spec.base.train.train_split_fraction == pytest.approx(0.8)
    assert spec.base.train.n_epochs == 2
    assert spec.base.model.embedding_dim == 8
    assert spec.probe.lengths == ()


def test_lengths_as_a_range_string(tmp_path):
    spec = parse_spec(spec_dict(data={"lengths": "1-2", "probe_lengths": [3]}))
    assert spec.base.train.lengths == "1-2"
    assert spec.probe.lengths == (3,)


def test_shipped_quickstart_spec_parses():
    spec = load_spec(REPO / "studies" / "quickstart.yaml")
    assert spec.name == "quickstart"
    assert spec.probe.lengths == (5,)
    assert isinstance(spec.make_sampler(), optuna.samplers.TPESampler)
    assert isinstance(spec.make_pruner(), optuna.pruners.MedianPruner)


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_parses_and_builds(path):
    spec = load_spec(path)
    spec.make_sampler(), spec.make_pruner()
    assert spec.name == path.stem


def test_config_for_applies_params_over_the_base():
    spec = parse_spec(spec_dict())
    config = spec.config_for({"model.model_type": "gru", "model.hidden_size": 12, "train.learning_rate": 0.05})
    assert (config.model.model_type, config.model.hidden_size, config.train.learning_rate) == ("gru", 12, 0.05)
    assert config.train.n_epochs == 2  # from fixed


def test_an_in_range_probe_is_parsed_stored_and_fingerprinted():
    from sweep.store.records import StudyMeta

    plain = parse_spec(spec_dict(data={"lengths": "1-2", "probe_lengths": [20]}))
    drawn = parse_spec(spec_dict(data={"lengths": "1-2", "probe_lengths": [20], "probe_in_range": True}))
    assert not plain.probe.in_range and drawn.probe.in_range
    assert drawn.fingerprint() != plain.fingerprint()
    study = optuna.create_study()
    StudyMeta(probe=drawn.probe).write(study)
    assert StudyMeta.read(study).probe == drawn.probe
    StudyMeta(probe=plain.probe).write(study)
    assert study.user_attrs["probe"] == {"lengths": [20], "sample": plain.probe.sample}  # stored as before


def test_fingerprint_follows_the_search_space_not_the_name():
    base = parse_spec(spec_dict())
    assert parse_spec(spec_dict(name="other")).fingerprint() == base.fingerprint()
    changed = parse_spec(spec_dict(space=with_space(model__hidden_size={"low": 8, "high": 32})))
    assert changed.fingerprint() != base.fingerprint()
    assert parse_spec(spec_dict(data={"lengths": [1, 2, 3]})).fingerprint() != base.fingerprint()


def test_worker_seeds_differ():
    spec = parse_spec(spec_dict(sampler={"type": "random", "seed": 7}))
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def first_value(worker: int) -> float:
        study = optuna.create_study(sampler=spec.make_sampler(worker))
        return study.ask(space).params["x"]

    assert first_value(0) == first_value(0)  # seeded
    assert first_value(0) != first_value(1)  # offset per worker


def test_hyperband_max_resource_defaults_to_n_epochs():
    spec = parse_spec(spec_dict(pruner={"type": "hyperband", "min_resource": 1}, fixed={"train.n_epochs": 3}))
    pruner = spec.make_pruner()
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert pruner._max_resource == 3


def test_pruner_and_sampler_as_plain_strings():
    spec = parse_spec(spec_dict(sampler="random", pruner="median"))
    assert isinstance(spec.make_sampler(), optuna.samplers.RandomSampler)
    assert isinstance(spec.make_pruner(), optuna.pruners.MedianPruner)


def test_every_sampler_and_pruner_is_covered():
    assert set(SAMPLER_BODIES) == set(SAMPLERS)
    assert set(PRUNER_BODIES) == set(PRUNERS)


@pytest.mark.parametrize("kind", sorted(SAMPLER_BODIES))
def test_every_sampler_builds(kind):
    space = GRID_SPACE if kind in ("grid", "bruteforce") else spec_dict()["space"]
    spec = parse_spec(spec_dict(sampler=SAMPLER_BODIES[kind], space=space))
    assert isinstance(spec.make_sampler(), SAMPLERS[kind].cls)
    assert isinstance(spec.make_sampler(worker=1), SAMPLERS[kind].cls)


@pytest.mark.parametrize("kind", sorted(PRUNER_BODIES))
def test_every_pruner_builds(kind):
    spec = parse_spec(spec_dict(pruner=PRUNER_BODIES[kind]))
    assert isinstance(spec.make_pruner(), PRUNERS[kind].cls)


def test_cmaes_sampler_is_usable_or_refused():
    if importlib.util.find_spec("cmaes") is not None:
        return
    with pytest.raises(SpecError, match="cmaes"):
        parse_spec(spec_dict(sampler={"type": "cmaes"}))


# ---------------------------------------------------------------------------------------------
# Conditional parameters


CONDITIONAL_SPACE = {
    "model.model_type": {"choices": ["rnn", "lstm"]},
    "model.num_layers": {"choices": [1, 2], "when": {"model.model_type": "lstm"}},
    "model.hidden_size": {"low": 8, "high": 16, "when": {"model.model_type": ["rnn"]}},
}


def test_balance_is_parsed():
    spec = parse_spec(spec_dict(balance="model.model_type"))
    assert spec.balance is spec.space[0]
    assert parse_spec(spec_dict()).balance is None


def test_when_is_parsed():
    spec = parse_spec(spec_dict(space=CONDITIONAL_SPACE))
    _, layers, hidden = spec.space
    assert layers.when == {"model.model_type": ("lstm",)}
    assert hidden.when == {"model.model_type": ("rnn",)}
    assert layers.active({"model.model_type": "lstm"}) and not layers.active({"model.model_type": "rnn"})
    assert not layers.active({})


def test_conditional_keys_are_suggested_only_when_active():
    spec = parse_spec(spec_dict(space=CONDITIONAL_SPACE, sampler={"type": "random", "seed": 3}))
    study = optuna.create_study(sampler=spec.make_sampler(), direction="maximize")
    seen = set()
    for _ in range(30):
        trial = study.ask()
        params = spec.suggest(trial)
        study.tell(trial, 0.0)
        assert trial.params == params
        kind = params["model.model_type"]
        seen.add(kind)
        if kind == "lstm":
            assert set(params) == {"model.model_type", "model.num_layers"}
        else:
            assert set(params) == {"model.model_type", "model.hidden_size"}
    assert seen == {"rnn", "lstm"}


def test_suggest_int_float_step_and_choices():
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    assert Param("a", choices=(1, 2)).suggest(trial) in (1, 2)
    value = Param("b", low=8, high=16, step=4, is_int=True).suggest(trial)
    assert isinstance(value, int) and value in (8, 12, 16)
    value = Param("c", low=0.0, high=0.5, step=0.25).suggest(trial)
    assert value in (0.0, 0.25, 0.5)


# ---------------------------------------------------------------------------------------------
# Mistakes: each one a SpecError whose message names the file and the key


MISTAKES = {
    "unknown top key": (dict(trials=3), "trials", "unknown key"),
    "unknown space key": (
        dict(space=with_space(model__hiden_size={"low": 8, "high": 16})),
        "space.model.hiden_size",
        "did you mean model.hidden_size",
    ),
    "unknown fixed key": (dict(fixed={"train.n_epoch": 2}), "fixed", "did you mean train.n_epochs"),
    "unknown data key": (dict(data={"lengths": [1, 2], "val_frac": 0.2}), "data.val_frac", "unknown key"),
    "unknown param setting": (
        dict(space=with_space(model__hidden_size={"low": 8, "high": 16, "lo": 1})),
        "space.model.hidden_size.lo",
        "unknown key",
    ),
    "string among int choices": (
        dict(space=with_space(model__hidden_size={"choices": [8, "big"]})),
        "space.model.hidden_size",
        "'big'",
    ),
    "bad model_type choice": (
        dict(space=with_space(model__model_type={"choices": ["rnn", "transformer"]})),
        "space.model.model_type",
        "rnn, lstm, gru",
    ),
    "wrong type in fixed": (dict(fixed={"train.n_epochs": "many"}), "fixed", "train.n_epochs"),
    "range for a string key": (
        dict(space=with_space(model__model_type={"low": 1, "high": 2})),
        "space.model.model_type",
        "not numeric",
    ),
    "float type for an int key": (
        dict(space=with_space(model__hidden_size={"low": 8, "high": 16, "type": "float"})),
        "space.model.hidden_size.type",
        "int",
    ),
    "non-integer bounds for an int key": (
        dict(space=with_space(model__hidden_size={"low": 8.5, "high": 16})),
        "space.model.hidden_size",
        "integers",
    ),
    "low > high": (
        dict(space=with_space(model__hidden_size={"low": 16, "high": 8})),
        "space.model.hidden_size",
        "low 16 > high 8",
    ),
    "range missing high": (
        dict(space=with_space(model__hidden_size={"low": 8})),
        "space.model.hidden_size",
        "low and high",
    ),
    "out-of-range bound": (
        dict(space=with_space(train__learning_rate={"low": 0.01, "high": 20})),
        "space.train.learning_rate",
        "(0, 10]",
    ),
    "log with low 0": (
        dict(space=with_space(model__dropout={"low": 0.0, "high": 0.5, "log": True})),
        "space.model.dropout",
        "log scale needs low > 0",
    ),
    "log with negative low": (
        dict(space=with_space(train__weight_decay={"low": -1.0, "high": 0.5, "log": True})),
        "space.train.weight_decay",
        "low > 0",
    ),
    "step with log": (
        dict(space=with_space(train__learning_rate={"low": 0.01, "high": 0.1, "log": True, "step": 0.01})),
        "space.train.learning_rate",
        "step and log",
    ),
    "choices and range": (
        dict(space=with_space(model__hidden_size={"choices": [8], "low": 8})),
        "space.model.hidden_size",
        "not both",
    ),
    "empty choices": (
        dict(space=with_space(model__hidden_size={"choices": []})),
        "space.model.hidden_size.choices",
        "non-empty",
    ),
    "empty space": (dict(space={}), "space", "required"),
    "unknown sampler": (dict(sampler={"type": "bayes"}), "sampler.type", "'bayes' is not one of tpe"),
    "unknown pruner": (dict(pruner={"type": "early"}), "pruner.type", "'early' is not one of median"),
    "unknown sampler setting": (
        dict(sampler={"type": "tpe", "n_startup": 3}),
        "sampler.n_startup",
        "unknown setting for tpe",
    ),
    "unknown pruner setting": (
        dict(pruner={"type": "median", "warmup": 3}),
        "pruner.warmup",
        "unknown setting for median",
    ),
    "pruner setting with a bad value": (
        dict(pruner={"type": "percentile", "percentile": 150}),
        "sampler/pruner",
        "percentile",
    ),
    "pruner missing a required setting": (dict(pruner={"type": "percentile"}), "sampler/pruner", "percentile"),
    "when refers to a later key": (
        dict(
            space={
                "model.hidden_size": {"low": 8, "high": 16, "when": {"model.model_type": ["rnn"]}},
                "model.model_type": {"choices": ["rnn", "gru"]},
            }
        ),
        "space.model.hidden_size.when",
        "listed earlier",
    ),
    "when refers to a range key": (
        dict(
            space={
                "model.hidden_size": {"low": 8, "high": 16},
                "train.learning_rate": {"low": 0.01, "high": 0.1, "when": {"model.hidden_size": [8]}},
            }
        ),
        "space.train.learning_rate.when",
        "must be a choices parameter",
    ),
    "when value not among choices": (
        dict(
            space={
                "model.model_type": {"choices": ["rnn", "gru"]},
                "model.num_layers": {"choices": [1, 2], "when": {"model.model_type": ["lstm"]}},
            }
        ),
        "space.model.num_layers.when",
        "'lstm' is not one of model.model_type's choices",
    ),
    "when is not a mapping": (
        dict(space=with_space(model__num_layers={"choices": [1, 2], "when": "lstm"})),
        "space.model.num_layers.when",
        "mapping",
    ),
    "grid sampler with a range": (dict(sampler={"type": "grid"}), "space.model.hidden_size", "grid sampler"),
    "grid sampler with a condition": (
        dict(
            sampler={"type": "grid"},
            space={
                "model.model_type": {"choices": ["rnn", "gru"]},
                "model.num_layers": {"choices": [1, 2], "when": {"model.model_type": "gru"}},
            },
        ),
        "space.model.num_layers",
        "unconditional",
    ),
    "probe metric without probe_lengths": (dict(metric="probe_exact_match"), "metric", "probe_lengths"),
    "probe constraint without probe_lengths": (
        dict(constraints={"probe_in_range_exact_match": {"min": 0.5}}),
        "constraints.probe_in_range_exact_match",
        "needs data.probe_lengths",
    ),
    "lrnn fixed without a head": (
        dict(fixed={"model.model_type": "lrnn"}),
        "fixed",
        "model.head_size > 0",
    ),
    "in-range probe metric without probe_lengths": (
        dict(objectives=[{"metric": "probe_in_range_longest"}, {"metric": "n_parameters"}]),
        "objectives",
        "probe_in_range_longest needs data.probe_lengths",
    ),
    "unknown metric": (dict(metric="accuracy"), "metric", "val_exact_match"),
    "unknown value": (dict(value="mean"), "value", "best, last"),
    "val_fraction 0": (dict(data={"lengths": [1, 2], "val_fraction": 0}), "data.val_fraction", "between 0 and 1"),
    "val_fraction 1": (dict(data={"lengths": [1, 2], "val_fraction": 1}), "data.val_fraction", "between 0 and 1"),
    "val_fraction 1.5": (dict(data={"lengths": [1, 2], "val_fraction": 1.5}), "data.val_fraction", "between 0 and 1"),
    "val_fraction text": (
        dict(data={"lengths": [1, 2], "val_fraction": "a fifth"}),
        "data.val_fraction",
        "between 0 and 1",
    ),
    "bad lengths": (dict(data={"lengths": "0-2"}), "data", "between 1 and 10,000"),
    "bad probe_lengths": (
        dict(data={"lengths": [1, 2], "probe_lengths": "five"}),
        "data.probe_lengths",
        "list of lengths",
    ),
    "n_trials 0": (dict(n_trials=0), "n_trials", "integer from 1 to 1000000"),
    "n_trials past the top": (dict(n_trials=10**9), "n_trials", "integer from 1 to 1000000"),
    "n_trials text": (dict(n_trials="ten"), "n_trials", "integer from 1 to 1000000"),
    "timeout negative": (dict(timeout=-5), "timeout", "seconds > 0"),
    "keep_checkpoints unknown": (dict(keep_checkpoints="some"), "keep_checkpoints", "best, all"),
    "missing name": (dict(name=""), "name", "required"),
    "fixed not a mapping": (dict(fixed=["train.n_epochs"]), "fixed", "mapping"),
    "balance on a key not in space": (dict(balance="model.num_layers"), "balance", "unconditional choices parameter"),
    "balance on a range": (dict(balance="model.hidden_size"), "balance", "unconditional choices parameter"),
    # accepted before, and wrong: one setting silently won over another
    "a key fixed and searched": (
        dict(fixed={"model.hidden_size": 12}),
        "space.model.hidden_size",
        "also set by fixed.model.hidden_size",
    ),
    "data.lengths and fixed train.lengths": (
        dict(fixed={"train.lengths": "1-3"}),
        "fixed.train.lengths",
        "also set by data.lengths",
    ),
    "data.lengths and searched train.lengths": (
        dict(space=with_space(train__lengths={"choices": ["1-2", "1-3"]})),
        "space.train.lengths",
        "data.lengths",
    ),
    "probe lengths seen in training": (
        dict(data={"lengths": [1, 2], "probe_lengths": [2, 3]}),
        "data.probe_lengths",
        "[2] are also training lengths",
    ),
    "a range of one value": (
        dict(space=with_space(model__hidden_size={"low": 8, "high": 8})),
        "space.model.hidden_size",
        "holds one value",
    ),
    "a step wider than its range": (
        dict(space=with_space(model__hidden_size={"low": 8, "high": 12, "step": 8})),
        "space.model.hidden_size",
        "one value",
    ),
    "a choice listed twice": (
        dict(space=with_space(model__hidden_size={"choices": [8, 16, 8]})),
        "space.model.hidden_size.choices",
        "twice",
    ),
    "a setting that takes a Python object": (
        dict(sampler={"type": "gp", "constraints_func": "f"}),
        "sampler.constraints_func",
        "unknown setting for gp",
    ),
    "bruteforce over a continuous range": (
        dict(sampler="bruteforce"),
        "space.train.learning_rate",
        "give a float range a step",
    ),
    "patient wrapping an unknown pruner": (
        dict(pruner={"type": "patient", "patience": 2, "wrapped": {"type": "medain"}}),
        "pruner.wrapped.type",
        "did you mean median?",
    ),
    "patient without patience": (dict(pruner={"type": "patient"}), "sampler/pruner", "patience"),
    "threshold with neither bound": (dict(pruner={"type": "threshold"}), "sampler/pruner", "lower"),
    "stop without patience": (dict(stop={"min_delta": 0.01}), "stop.patience", "required"),
    "stop with a negative min_delta": (dict(stop={"patience": 3, "min_delta": -1}), "stop.min_delta", ">= 0"),
    "stop as a number": (dict(stop=30), "stop", "expected {patience: 30"),
    "enqueue a choice not searched": (
        dict(enqueue=[{"model.model_type": "lstm"}]),
        "enqueue[0].model.model_type",
        "not one of the searched choices ['rnn', 'gru']",
    ),
    "enqueue a value outside the range": (
        dict(enqueue=[{"model.hidden_size": 64}]),
        "enqueue[0].model.hidden_size",
        "outside the searched range: an integer in 8..16",
    ),
    "enqueue a key the study fixes": (
        dict(enqueue=[{"train.n_epochs": 5}]),
        "enqueue[0].train.n_epochs",
        "not searched by this study (fixed at 2)",
    ),
    "enqueue a value of the wrong type": (
        dict(enqueue=[{"model.hidden_size": "wide"}]),
        "enqueue[0].model.hidden_size",
        "expected",
    ),
    "enqueue a recipe that is not there": (dict(enqueue=["nowhere.yaml"]), "enqueue[0]", "no such recipe file"),
    "enqueue a number": (dict(enqueue=[3]), "enqueue[0]", "expected a parameter set"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_mistake_names_file_and_key(mistake, tmp_path):
    assert_spec_mistake(tmp_path, *MISTAKES[mistake])


def test_parse_spec_names_its_source():
    with pytest.raises(SpecError, match=r"^studies/x\.yaml: n_trials: "):
        parse_spec(spec_dict(n_trials=0), "studies/x.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "YAML mapping"),
        ("", "YAML mapping"),
    ],
)
def test_not_a_spec_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message) as caught:
        load_spec(path)
    assert str(path) in str(caught.value)


def test_a_key_given_twice_in_yaml_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump(spec_dict(), sort_keys=False) + "space:\n  model.hidden_size: {low: 8, high: 9}\n")
    with pytest.raises(SpecError, match=r"line \d+: 'space' is given twice; keep one") as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_spec_that_is_not_utf8_text(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError, match="not a UTF-8 text file"):
        load_spec(path)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="no such study spec") as caught:
        load_spec(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(caught.value)


# ---------------------------------------------------------------------------------------------
# Through the CLI: exit 2, one "error:" line, no traceback


@pytest.mark.parametrize(
    "mistake", ["unknown top key", "unknown space key", "low > high", "unknown sampler", "n_trials 0"]
)
def test_cli_run_bad_spec(mistake, tmp_path):
    changes, key, message = MISTAKES[mistake]
    path = write_spec(tmp_path, "bad.yaml", **changes)
    line = assert_one_error_line(run_cli(tmp_path, path))
    assert line.startswith(f"error: {path}: {key}: ") and message in line
    assert not (tmp_path / "s.db").exists()  # the spec is checked before the storage is opened
    assert not (tmp_path / "ckpt").exists()


def test_cli_run_missing_spec(tmp_path):
    line = assert_one_error_line(run_cli(tmp_path, tmp_path / "nope.yaml"))
    assert "no such study spec" in line


@pytest.mark.processes
def test_cli_run_bad_spec_in_a_real_process(tmp_path):
    path = write_spec(tmp_path, "bad.yaml", space=with_space(model__hiden_size={"low": 8, "high": 16}))
    done = sweep_process(
        tmp_path, "run", "bad.yaml", "--storage", f"sqlite:///{tmp_path}/s.db", "--artifacts", tmp_path / "ckpt"
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad.yaml: space.model.hiden_size: "), done.stderr
    assert "did you mean model.hidden_size" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert yaml.safe_load(path.read_text())["name"] == "tiny"  # the spec file is left alone


def test_a_shipped_spec_by_name_from_any_folder(tmp_path, monkeypatch):
    from sweep.spec import shipped_specs

    monkeypatch.chdir(tmp_path)
    assert {"quickstart", "compare-cells", "compare-cost", "generalize"} <= set(shipped_specs())
    assert load_spec("quickstart").name == "quickstart"
    assert load_spec("studies/compare-cost.yaml").name == "compare-cost"  # the README's spelling, anywhere
    with pytest.raises(
        SpecError, match=r"no such study spec; give a YAML file or a shipped spec's name \(compare-cells"
    ):
        load_spec("quickstrt")


# ---------------------------------------------------------------------------------------------
# Study names: a new study's name is plain, since it names files and URLs


@pytest.mark.parametrize("name", ["quickstart", "compare-cells", "a", "Study_2.v1", "7", "x" * 64])
def test_names_a_study_may_take(name):
    assert check_study_name(name) == name


@pytest.mark.parametrize("name", ["", "a b", "a/b", "../x", "a:b", "-x", ".hidden", "x" * 65, "t\x01", "é", "a\\b"])
def test_names_a_new_study_may_not_take(name, tmp_path):
    with pytest.raises(SpecError) as caught:
        check_study_name(name)
    assert "a study name is 1 to 64 letters, digits, '.', '_' or '-'" in str(caught.value)
    assert "\n" not in str(caught.value)
    if name:  # an empty name in a spec is "required", said by its own check
        assert_spec_mistake(tmp_path, {"name": name}, "name", "expected 1 to 64 letters, digits")


# ---------------------------------------------------------------------------------------------
# Warm starts (enqueue:) and the stop rule (stop:)


def test_enqueue_entries_become_trial_params(tmp_path):
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.parent.mkdir()
    # a recipe file: its searched keys are taken; keys equal to the study's fixed ones and how it ran are left out
    recipe.write_text("model: {model_type: gru, hidden_size: 12}\ntrain: {n_epochs: 2, num_threads: 1}\n")
    path = write_spec(
        tmp_path, enqueue=[{"model": {"hidden_size": "16"}, "train.learning_rate": 0.05}, "recipes/r.yaml"]
    )
    spec = load_spec(path)
    assert spec.enqueue == (
        {"model.hidden_size": 16, "train.learning_rate": 0.05},
        {"model.model_type": "gru", "model.hidden_size": 12},
    )
    assert spec.fingerprint() == load_spec(write_spec(tmp_path, "plain.yaml")).fingerprint()  # not part of the search


def test_a_recipe_that_trains_otherwise_is_refused(tmp_path):
    (tmp_path / "r.yaml").write_text("model: {hidden_size: 12}\ntrain: {n_epochs: 30}\n")
    with pytest.raises(SpecError, match=r"enqueue\[0\]\.train\.n_epochs: not searched by this study \(fixed at 2\)"):
        load_spec(write_spec(tmp_path, enqueue=["r.yaml"]))


def test_enqueue_respects_when(tmp_path):
    space = {
        "model.model_type": {"choices": ["rnn", "lstm"]},
        "model.num_layers": {"choices": [1, 2], "when": {"model.model_type": "lstm"}},
    }
    ok = parse_spec(spec_dict(space=space, enqueue=[{"model.model_type": "lstm", "model.num_layers": 2}]))
    assert ok.enqueue == ({"model.model_type": "lstm", "model.num_layers": 2},)
    with pytest.raises(SpecError, match=r"model.num_layers: searched only when model.model_type in \['lstm'\]"):
        parse_spec(spec_dict(space=space, enqueue=[{"model.model_type": "rnn", "model.num_layers": 2}]))


def test_stop_rule_is_parsed_and_not_part_of_the_fingerprint():
    spec = parse_spec(spec_dict(stop={"patience": 30, "min_delta": 0.0005}))
    assert (spec.stop.patience, spec.stop.min_delta) == (30, 0.0005)
    assert parse_spec(spec_dict(stop={"patience": 3})).stop.min_delta == 0.0
    assert parse_spec(spec_dict()).stop is None
    assert spec.fingerprint() == parse_spec(spec_dict()).fingerprint()


def test_patient_wraps_the_pruner_it_names():
    spec = parse_spec(spec_dict(pruner={"type": "patient", "patience": 2, "wrapped": {"type": "hyperband"}}))
    pruner = spec.make_pruner()
    assert isinstance(pruner, optuna.pruners.PatientPruner)
    assert isinstance(pruner._wrapped_pruner, optuna.pruners.HyperbandPruner)
    assert pruner._wrapped_pruner._max_resource == spec.base.train.n_epochs
    alone = parse_spec(spec_dict(pruner={"type": "patient", "patience": 2})).make_pruner()
    assert alone._wrapped_pruner is None


def test_qmc_workers_share_one_sequence():
    spec = parse_spec(spec_dict(sampler={"type": "qmc", "seed": 5, "scramble": True}))
    assert spec.make_sampler(worker=0)._seed == spec.make_sampler(worker=3)._seed == 5


def test_combinations_count_the_space_with_when():
    space = {
        "model.model_type": {"choices": ["rnn", "lstm"]},
        "model.num_layers": {"choices": [1, 2, 3], "when": {"model.model_type": "lstm"}},
        "model.hidden_size": {"low": 8, "high": 16, "step": 4},
    }
    assert parse_spec(spec_dict(space=space)).combinations() == (1 + 3) * 3
    assert parse_spec(spec_dict()).combinations() is None  # a continuous range


def test_every_sampler_and_pruner_says_what_it_fits():
    for component in (*SAMPLERS.values(), *PRUNERS.values()):
        assert component.fits and "constraints_func" not in component.settings
