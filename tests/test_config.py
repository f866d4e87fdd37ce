"""digitsum.config: dotted keys, type conversion, range checks and their error messages."""

from __future__ import annotations

import dataclasses
import re

import pytest

from digitsum.config import (
    Config,
    ConfigError,
    ModelConfig,
    TrainConfig,
    apply,
    check_value,
    flatten,
    from_dict,
    known_keys,
    parse_overrides,
)
from digitsum.data import make_rows
from digitsum.datasets import split_rows


def default_values() -> dict:
    return {
        f"{section}.{name}": value for section, values in Config().to_dict().items() for name, value in values.items()
    }


def test_known_keys_are_every_config_field():
    expected = [f"model.{f.name}" for f in dataclasses.fields(ModelConfig)]
    expected += [f"train.{f.name}" for f in dataclasses.fields(TrainConfig)]
    assert known_keys() == expected
    for key in (  # the tutorial's keys are all there
        "model.model_type",
        "model.hidden_size",
        "train.dataset_path",
        "train.n_epochs",
        "train.learning_rate",
        "train.train_split_fraction",
        "train.batch_size",
        "train.weight_decay",
        "train.run_name",
        "train.log_path",
    ):
        assert key in known_keys()


@pytest.mark.parametrize(("key", "value"), sorted(default_values().items()))
def test_every_default_passes_its_own_check(key, value):
    assert check_value(key, value) == value
    if value is not None and not isinstance(value, bool):
        assert check_value(key, str(value)) == value  # and its command-line spelling too


# ---------------------------------------------------------------------------------------------
# Unknown keys


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("model.hiden_size", "model.hidden_size"),
        ("hidden_size", "model.hidden_size"),
        ("seed", "train.seed"),
        ("train.learning_rat", "train.learning_rate"),
        ("model.learning_rate", "train.learning_rate"),
    ],
)
def test_unknown_key_suggests_the_close_key(key, suggestion):
    with pytest.raises(ConfigError) as info:
        check_value(key, "1")
    message = str(info.value)
    assert repr(key) in message and "unknown config key" in message
    assert f"did you mean {suggestion}?" in message


@pytest.mark.parametrize("key", ["foo.bar", "model", "x", ""])
def test_unknown_key_without_a_close_one_lists_the_known_keys(key):
    with pytest.raises(ConfigError, match="unknown config key") as info:
        check_value(key, "1")
    assert "known keys: model.model_type" in str(info.value)
    assert "train.learning_rate" in str(info.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------------------------------------
# Types


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("model.hidden_size", "64", 64),
        ("model.hidden_size", " 64 ", 64),
        ("model.hidden_size", 64, 64),
        ("model.hidden_size", 64.0, 64),  # YAML may give a whole float
        ("train.learning_rate", "1e-3", 0.001),
        ("train.learning_rate", 0.01, 0.01),
        ("train.learning_rate", 1, 1.0),
        ("train.learning_rate", "10", 10.0),
        ("model.dropout", "0", 0.0),
        ("model.embedding_dim", "0", 0),
        ("train.weight_decay", "0.01", 0.01),
        ("train.grad_clip", "0", 0.0),
        ("train.sum_state_weight", "1", 1.0),
        ("train.num_threads", "0", 0),
        ("model.model_type", "rnn", "rnn"),
        ("model.model_type", "gru", "gru"),
        ("train.lr_schedule", "constant", "constant"),
        ("train.lengths", "2-4", "2-4"),
        ("train.lengths", "2,4,6", "2,4,6"),
        ("train.lengths", 5, "5"),  # YAML gives an int
        ("train.device", "cuda:1", "cuda:1"),
        ("train.device", "cpu", "cpu"),
        ("train.run_name", "lstm-64_a.1", "lstm-64_a.1"),
        ("train.log_path", "runs/x", "runs/x"),
        ("train.train_split_fraction", "0.5", 0.5),
        ("train.seed", "7", 7),
    ],
)
def test_conversion(key, value, expected):
    converted = check_value(key, value)
    assert converted == expected
    assert type(converted) is type(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("True", True),
        (" YES ", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("No", False),
        ("0", False),
        ("off", False),
    ],
)
def test_bool_parsing(value, expected):
    assert check_value("train.balance_lengths", value) is expected


@pytest.mark.parametrize("value", ["maybe", "", "2", "tru", 1, 0, None, 1.0])
def test_bool_rejects(value):
    with pytest.raises(ConfigError, match="train.balance_lengths"):
        check_value("train.balance_lengths", value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model.hidden_size", "abc"),
        ("model.hidden_size", "3.0"),
        ("model.hidden_size", 2.5),
        ("model.hidden_size", True),
        ("model.hidden_size", None),
        ("model.hidden_size", ""),
        ("model.hidden_size", [64]),
        ("train.n_epochs", "ten"),
        ("train.batch_size", "0x40"),
        ("train.learning_rate", "fast"),
        ("train.learning_rate", True),
        ("train.learning_rate", None),
        ("model.dropout", "half"),
        ("model.model_type", None),
        ("model.model_type", True),
        ("model.model_type", ["lstm"]),
        ("train.run_name", None),
        ("train.seed", "x"),
    ],
)
def test_wrong_type_names_the_key(key, value):
    with pytest.raises(ConfigError) as info:
        check_value(key, value)
    assert str(info.value).startswith(f"{key}={value!r}: expected")


def test_wrong_type_says_what_is_allowed():
    with pytest.raises(ConfigError, match=r"model.hidden_size='abc': expected an integer from 1 to 16384"):
        check_value("model.hidden_size", "abc")


# ---------------------------------------------------------------------------------------------
# Ranges


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("train.learning_rate", "-0.001", "(0, 10]"),
        ("train.learning_rate", "0", "(0, 10]"),
        ("train.learning_rate", "nan", "(0, 10]"),
        ("model.hidden_size", "0", "from 1 to 16384"),
        ("model.hidden_size", "-4", "from 1 to 16384"),
        ("model.num_layers", "0", "from 1 to 64"),
        ("model.dropout", "1.0", "[0, 1)"),
        ("model.dropout", "-0.1", "[0, 1)"),
        ("model.embedding_dim", "-1", "from 0 to 4096"),
        ("train.train_split_fraction", "1.5", "between 0 and 1"),
        ("train.train_split_fraction", "1", "between 0 and 1"),
        ("train.train_split_fraction", "0", "between 0 and 1"),
        ("train.n_epochs", "0", "from 1 to 100000"),
        ("train.batch_size", "0", "from 1 to 1048576"),
        ("train.weight_decay", "-1", ">= 0"),
        ("train.grad_clip", "-0.5", "in [0, 1e+06]"),
        ("train.sum_state_weight", "-1", "in [0, 1000]"),
        ("train.num_threads", "-1", "from 0 to 1024"),
        ("model.model_type", "LSTM", "rnn, lstm, gru"),
        ("model.model_type", "transformer", "rnn, lstm, gru"),
        ("train.lr_schedule", "linear", "constant, cosine"),
        ("train.device", "gpu", "cuda:N"),
        ("train.device", "cuda:", "cuda:N"),
        ("train.device", "CPU", "cuda:N"),
        ("train.run_name", "a b", "letters, digits"),
        ("train.run_name", "../up", "letters, digits"),
        ("train.run_name", "", "letters, digits"),
        ("train.log_path", "", "folder"),
        ("train.lengths", "4-2", "lengths"),
        ("train.lengths", "0", "lengths"),
        ("train.lengths", "10001", "lengths"),
        ("train.lengths", "two", "lengths"),
        ("model.hidden_size", "100000", "from 1 to 16384"),  # a slip that would not fit in memory
        ("train.n_epochs", "10000000", "from 1 to 100000"),
        ("train.num_threads", "100000", "from 0 to 1024"),
        ("train.sum_state_weight", "inf", "in [0, 1000]"),
    ],
)
def test_out_of_range(key, value, allowed):
    with pytest.raises(ConfigError) as info:
        check_value(key, value)
    message = str(info.value)
    assert message.startswith(f"{key}={value!r}: expected")
    assert allowed in message


def test_learning_rate_upper_bound():
    assert check_value("train.learning_rate", "10") == 10.0
    with pytest.raises(ConfigError, match="train.learning_rate"):
        check_value("train.learning_rate", "10.5")


def test_learning_rate_message_states_the_upper_bound():
    with pytest.raises(ConfigError, match="10"):
        check_value("train.learning_rate", "20")


def test_negative_seed_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        apply(Config(), {"train.seed": "-1"})
    assert str(info.value) == "train.seed='-1': expected an integer in [0, 2**32)"
    config = apply(Config(), {"train.seed": str(2**32 - 1)})  # the top of the range splits as any seed does
    train, val = split_rows(make_rows([1, 2]), config.train)
    assert len(train) + len(val) == 110


# ---------------------------------------------------------------------------------------------
# dataset_path: the only key that may be none


@pytest.mark.parametrize("value", [None, "none", "None", "NULL", "", "  "])
def test_dataset_path_none(value):
    assert check_value("train.dataset_path", value) is None


def test_dataset_path_text():
    assert check_value("train.dataset_path", "data/rows.csv") == "data/rows.csv"


@pytest.mark.parametrize("key", ["train.run_name", "model.model_type", "train.lengths", "train.log_path"])
def test_other_string_keys_are_not_optional(key):
    with pytest.raises(ConfigError, match=key):
        check_value(key, None)


# ---------------------------------------------------------------------------------------------
# flatten / apply / from_dict / parse_overrides


def test_flatten():
    nested = {"model": {"hidden_size": 64, "model_type": "gru"}, "train.seed": 3, "train": {"lengths": "2-4"}}
    assert flatten(nested) == {
        "model.hidden_size": 64,
        "model.model_type": "gru",
        "train.seed": 3,
        "train.lengths": "2-4",
    }
    assert flatten({"a": {"b": {"c": 1}}}) == {"a.b.c": 1}
    assert flatten({}) == {}
    assert flatten({"train": {}}) == {}


def test_apply_returns_a_new_checked_config():
    base = Config()
    config = apply(base, {"model": {"hidden_size": "32", "model_type": "rnn"}, "train.learning_rate": "0.01"})
    assert config.model.hidden_size == 32 and config.model.model_type == "rnn"
    assert config.train.learning_rate == 0.01
    assert base == Config()  # unchanged
    untouched = {
        k: v
        for k, v in default_values().items()
        if k not in ("model.hidden_size", "model.model_type", "train.learning_rate")
    }
    after = {f"{s}.{n}": v for s, values in config.to_dict().items() for n, v in values.items()}
    assert {k: after[k] for k in untouched} == untouched


def test_apply_keeps_earlier_values():
    first = apply(Config(), {"model.hidden_size": 32})
    second = apply(first, {"train.seed": 5})
    assert second.model.hidden_size == 32 and second.train.seed == 5


def test_apply_rejects_and_names_the_key():
    with pytest.raises(ConfigError, match="model.hidden_size"):
        apply(Config(), {"model": {"hidden_size": "zero"}})
    with pytest.raises(ConfigError, match="unknown config key 'model.colour'"):
        apply(Config(), {"model": {"colour": "blue"}})


def test_from_dict():
    config = from_dict({"model.model_type": "lstm", "train": {"n_epochs": 2, "dataset_path": "none"}})
    assert config.model.model_type == "lstm"
    assert config.train.n_epochs == 2
    assert config.train.dataset_path is None
    assert from_dict({}) == Config()


def test_parse_overrides():
    assert parse_overrides(
        ["model.hidden_size=64", " train.lengths = 2-4", "train.run_name=a=b", "train.dataset_path="]
    ) == {
        "model.hidden_size": "64",
        "train.lengths": " 2-4",
        "train.run_name": "a=b",
        "train.dataset_path": "",
    }
    assert parse_overrides([]) == {}
    # The last one of a key wins.
    assert parse_overrides(["train.seed=1", "train.seed=2"]) == {"train.seed": "2"}


@pytest.mark.parametrize("item", ["model.hidden_size", "=64", " =64", ""])
def test_parse_overrides_rejects(item):
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides([item])


def test_overrides_end_to_end():
    config = from_dict(parse_overrides(["model.hidden_size=8", "train.balance_lengths=yes", "train.dataset_path=none"]))
    assert config.model.hidden_size == 8
    assert config.train.balance_lengths is True
    assert config.train.dataset_path is None
    with pytest.raises(ConfigError, match=r"train.learning_rate='-1'"):
        from_dict(parse_overrides(["train.learning_rate=-1"]))


def test_infinite_values():
    with pytest.raises(ConfigError):
        check_value("train.learning_rate", "inf")
    with pytest.raises(ConfigError, match="a number in"):
        check_value("train.grad_clip", "inf")  # 0 turns clipping off; infinity is refused like any slip
    assert check_value("train.grad_clip", "0") == 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model.model_type": "lrnn"}, "give it model.head_size > 0"),
        ({"model.model_type": "lrnn", "model.head_size": 8, "model.num_layers": 2}, "use model.num_layers=1"),
        ({"model.model_type": "lrnn", "model.head_size": 8, "model.recurrent_init": "identity"}, "recurrent_init"),
        ({"model.model_type": "gru", "model.nonlinearity": "relu"}, "model.nonlinearity=relu applies to"),
        ({"model.model_type": "rnn", "model.forget_bias": 1}, "model.forget_bias applies to"),
    ],
)
def test_keys_that_do_not_apply_to_the_model_type_are_refused(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(values)
