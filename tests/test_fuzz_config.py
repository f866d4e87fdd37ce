"""Fuzz `sweep train`'s config: KEY=VALUE overrides and --config files, YAML and JSON, nested or dotted.

Keys are the declared ones, near misses and unknown ones; values are of every type. A value that is
valid but would make training long (more epochs, longer strings, bigger models) is swapped for a
cheap one before the run, and the cheap values of those keys are given where the input leaves them
out: the fuzzing is of how values are read, not of training.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fuzz import as_yaml, call, extreme_numbers, paths, text_of, weird_text, yaml_values
from hypothesis import given
from hypothesis import strategies as st

from digitsum import config as cfg
from digitsum.errors import UsageError

pytestmark = pytest.mark.fuzz

KEYS = list(cfg.schema())
# What a run may cost at most, per key; the values given when the input does not set the key.
CHEAP = {
    "train.lengths": ("2", lambda v: max(map(int, v.replace("-", ",").split(","))) <= 2),
    "train.n_epochs": ("1", lambda v: v <= 2),
    "train.dataset_path": ("none", lambda v: v is None),
    "model.hidden_size": ("8", lambda v: v <= 32),
    "model.embedding_dim": ("8", lambda v: v <= 32),
    "model.head_size": ("0", lambda v: v <= 32),
    "model.num_layers": ("1", lambda v: v <= 2),
    "train.num_threads": ("1", lambda v: 0 < v <= 2),
    "train.device": ("cpu", lambda v: True),
}


def cheap(name: str, value: Any) -> Any:
    """`value`, unless it is a valid value of a costly key that costs too much: then the cheap one."""
    if name not in CHEAP:
        return value
    try:
        converted = cfg.check_value(name, value)
    except UsageError:
        return value  # refused: that is what is fuzzed
    default, affordable = CHEAP[name]
    return value if converted is not None and affordable(converted) else default


names = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS).map(lambda k: k.replace("_", "", 1)),  # a near miss
    st.sampled_from(KEYS).map(lambda k: k.split(".", 1)[1]),  # no section
    st.sampled_from(["model", "train", "model.", ".x", "model.model_type.x", "a.b.c", "=", "train.seed "]),
    weird_text,
)
values = st.one_of(
    st.sampled_from(["rnn", "lstm", "gru", "lrnn", "lsmt", "true", "no", "none", "2-4", "1,2", "cpu", "0.003"]),
    extreme_numbers,
    weird_text,
    yaml_values,
)


@given(data=st.data())
def test_train_config(fuzz_box, data):
    box = fuzz_box
    overrides = data.draw(st.dictionaries(names, values, max_size=4))
    in_file = data.draw(st.dictionaries(names, values, max_size=4))
    for name in ("train.log_path", "train.run_name", "train.dataset_path"):  # paths of every kind
        if data.draw(st.booleans()):
            overrides[name] = data.draw(paths(box, existing_file=box.csv))
    args = ["train"]
    if in_file:
        form = data.draw(st.sampled_from(["yaml", "json", "nested yaml", "text"]))
        path = box.folder / f"config-{data.draw(st.integers(0, 10**6))}.{'json' if form == 'json' else 'yaml'}"
        if form == "json":
            body = json.dumps(in_file, default=str)
        elif form == "nested yaml":
            nest: dict[str, Any] = {}
            for key, value in in_file.items():
                section, _, field = str(key).partition(".")
                nest.setdefault(section, {})[field or section] = value
            body = as_yaml(nest)
        elif form == "text":
            body = data.draw(weird_text)
        else:
            body = as_yaml(in_file)
        path.write_bytes(body.encode("utf-8", "surrogatepass"))
        args += ["--config", path]
    given_names = {str(k).strip() for k in overrides}
    overrides = {k: cheap(str(k).strip(), v) for k, v in overrides.items()}
    base = {k: v[0] for k, v in CHEAP.items() if k not in given_names}
    for key, value in {**base, **overrides}.items():
        args.append(f"{key}={text_of(value)}")
    if data.draw(st.booleans()):
        args.append("--overwrite")
    call(box, "config", args)
