"""Fuzz every option that takes a value, command by command: paths (missing, a folder, a device, not
writable), devices, seeds, counts, storage URLs, study names, STUDY:TRIAL references and ports.

Values that would start long work are left out where they are valid (more workers than one, a
free port for the dashboard): what is fuzzed is how each value is read and refused, not training.
"""

from __future__ import annotations

import socket

import pytest
from fuzz import (
    call,
    counts,
    devices,
    paths,
    seeds,
    storage_urls,
    study_names,
    text_of,
    weird_text,
)
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz


def refs(box):
    """STUDY:TRIAL references and files, valid and not."""
    named = st.builds(
        lambda study, trial: f"{study}:{trial}",
        st.one_of(st.sampled_from([box.study, "nope", ""]), study_names),
        st.one_of(st.sampled_from(["0", "1", "best", "99", "-1", "1e3", "٣", "99999999999999999999999"]), counts),
    )
    return st.one_of(named, paths(box, existing_file=box.checkpoint), st.just(str(box.checkpoint)))


def optional(flag: str, values: st.SearchStrategy) -> st.SearchStrategy[list[str]]:
    """`[flag, value]` or nothing."""
    return st.one_of(st.just([]), values.map(lambda v: [flag, text_of(v)]))


def as_int(value: object) -> int | None:
    """The integer a command line value means to click (which takes "+2", " 2 " and "1_0" too), or None."""
    try:
        return int(text_of(value))
    except ValueError:
        return None


def at_most(values: st.SearchStrategy, top: int) -> st.SearchStrategy:
    """Counts, but no valid one above `top`: more workers would start processes for every input, and
    more trials would train for as long as they were asked to (both are fine, and not what is fuzzed)."""
    return values.filter(lambda v: (as_int(v) or 0) <= top)


@given(data=st.data())
def test_data(fuzz_box, data):
    box = fuzz_box
    out = data.draw(paths(box, existing_file=box.folder / "written.csv"))
    lengths = data.draw(st.one_of(st.sampled_from(["1", "2", "1-2", "1,2", "18", "0", "19", "2-1", "-1"]), weird_text))
    args = ["data", out, "--lengths", lengths]
    args += data.draw(optional("--sample", counts)) + data.draw(optional("--seed", seeds))
    call(box, "options", args)


@given(data=st.data())
def test_evaluate_and_predict(fuzz_box, data):
    box = fuzz_box
    checkpoint = data.draw(refs(box))
    tail = data.draw(optional("--device", devices)) + data.draw(optional("--storage", storage_urls(box)))
    tail += data.draw(optional("--artifacts", paths(box)))
    if data.draw(st.booleans()):
        csv = data.draw(st.one_of(st.just(str(box.csv)), paths(box, existing_file=box.csv)))
        call(box, "options", ["evaluate", checkpoint, csv, *tail])
    else:
        sequences = data.draw(st.lists(st.one_of(st.sampled_from(["12", "1294", "0"]), weird_text), max_size=3))
        call(box, "options", ["predict", checkpoint, *sequences, *tail])


@given(data=st.data())
def test_read_only_study_commands(fuzz_box, data):
    box = fuzz_box
    name = data.draw(st.one_of(st.just(box.study), study_names))
    storage = data.draw(optional("--storage", storage_urls(box)))
    command = data.draw(st.sampled_from(["best", "ls", "export", "check"]))
    if command == "best":
        args = ["best", name, *storage] + data.draw(optional("--download", paths(box)))
        args += data.draw(optional("--artifacts", paths(box))) + (["--json"] if data.draw(st.booleans()) else [])
    elif command == "ls":
        args = ["ls", *storage]
    elif command == "export":
        args = ["export", name, "--out", data.draw(paths(box)), *storage]
    else:
        args = ["check", data.draw(st.one_of(paths(box), st.sampled_from(["quickstart", "studies/quickstart.yaml"])))]
    call(box, "options", args)


@given(data=st.data())
def test_run(fuzz_box, data):
    box = fuzz_box
    spec = data.draw(st.one_of(st.just(str(box.folder / "spec.yaml")), paths(box)))
    args = ["run", spec, "--storage", data.draw(st.one_of(st.just(box.url), storage_urls(box)))]
    args += data.draw(optional("--trials", at_most(counts, 3))) + data.draw(optional("--timeout", counts))
    args += data.draw(optional("--workers", at_most(counts, 1))) + data.draw(optional("--threads", counts))
    args += data.draw(optional("--name", study_names)) + data.draw(optional("--artifacts", paths(box)))
    args += data.draw(optional("--tensorboard", paths(box)))
    call(box, "options", args, writes=True)


@given(data=st.data())
def test_rerun(fuzz_box, data):
    box = fuzz_box
    name = data.draw(st.one_of(st.just(box.study), study_names))
    args = ["rerun", name] + data.draw(st.one_of(st.just([]), counts.map(lambda c: [c])))
    args += data.draw(optional("--top", counts))
    seed_lists = st.lists(st.one_of(st.sampled_from(["0", "1"]), seeds), min_size=1, max_size=2).map(",".join)
    args += data.draw(optional("--seeds", st.one_of(seed_lists, weird_text)))
    args += data.draw(optional("--workers", at_most(counts, 1))) + data.draw(optional("--threads", counts))
    args += ["--storage", data.draw(st.one_of(st.just(box.url), storage_urls(box)))]
    call(box, "options", args, writes=True)


@given(data=st.data())
def test_report_and_rm(fuzz_box, data):
    box = fuzz_box
    storage = ["--storage", data.draw(st.one_of(st.just(box.url), storage_urls(box)))]
    if data.draw(st.booleans()):
        names = data.draw(st.lists(st.one_of(st.just(box.study), study_names), min_size=1, max_size=2))
        args = ["report", *names, *storage] + data.draw(optional("--out", paths(box)))
        args += data.draw(optional("--artifacts", paths(box))) + data.draw(st.sampled_from([[], ["--no-attach"]]))
        call(box, "options", args, writes=True)
    else:
        name = data.draw(study_names.filter(lambda n: n.strip() != box.study))  # never delete the sandbox's study
        args = ["rm", name, *storage, *data.draw(st.sampled_from([[], ["--yes"]]))]
        call(box, "options", args + data.draw(optional("--artifacts", paths(box))), writes=True)


@pytest.fixture(scope="module")
def taken_port():
    """A port held on every address, so that no fuzzed host can start a dashboard that never returns."""
    with socket.socket(socket.AF_INET6) as held:
        held.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 and IPv6 alike
        held.bind(("::", 0))
        yield held.getsockname()[1]


@given(data=st.data())
def test_dashboard(fuzz_box, taken_port, data):
    box = fuzz_box
    ports = st.one_of(  # never a port that is free: the dashboard would start and serve until stopped
        st.just(str(taken_port)),
        st.integers().filter(lambda p: not 0 < p < 65536).map(str),
        weird_text.filter(lambda t: not 0 < (as_int(t) or 0) < 65536),
    )
    # Addresses and broken ones, never a name to look up: that would ask a DNS server off this machine.
    hosts = st.sampled_from(
        ["127.0.0.1", "::1", "0.0.0.0", "::", "localhost", "", " ", "999.1.1.1", "1.2.3", "192.0.2.1", "fe80::1"]
        + ["[::1]", "::g", "127.0.0.1:80", "-h", "\udcff", "1" * 300, "a b", "%", "x..y"]
    )
    args = ["dashboard", "--port", data.draw(ports), "--host", data.draw(hosts)]
    args += data.draw(optional("--storage", storage_urls(box))) + data.draw(optional("--artifacts", paths(box)))
    call(box, "options", args)


ENQUEUE_VALUES = st.sampled_from(
    ["model.model_type=gru", "model.model_type=lstm", "model.hidden_size=12", "model.hidden_size=99"]
    + ["train.learning_rate=0.05", "train.learning_rate=-1", "train.n_epochs=3", "model.hidden=8", "x", "=1"]
)


@given(data=st.data())
def test_enqueue_and_copy(fuzz_box, data):
    box = fuzz_box
    name = data.draw(st.one_of(st.just(box.study), study_names))
    storage = ["--storage", data.draw(st.one_of(st.just(box.url), storage_urls(box)))]
    if data.draw(st.booleans()):
        values = data.draw(st.lists(st.one_of(ENQUEUE_VALUES, weird_text), max_size=3))
        call(box, "options", ["enqueue", name, *values, *storage], writes=True)
        return
    to = data.draw(st.one_of(st.just(f"sqlite:///{box.folder / 'copies.db'}"), storage_urls(box)))
    args = ["copy", name, "--to", to, *storage] + data.draw(optional("--to-name", study_names))
    args += data.draw(optional("--artifacts", paths(box))) + data.draw(optional("--to-artifacts", paths(box)))
    call(box, "options", args, writes=True)
