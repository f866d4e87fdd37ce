"""Every command with bad input: exit code 2, one line naming the problem, no traceback, and the
storage (a real study made first) unchanged. docs/troubleshooting.md lists these cases."""

from __future__ import annotations

import socket
from pathlib import Path

import optuna
import pytest
from sweep_helpers import assert_one_error_line, invoke, run_cli, spec_dict, storage_url, write_spec

SPEC_MISTAKES = {
    "unknown top key": ({"colour": "blue"}, "colour: unknown key"),
    "unknown config key": ({"space": {"model.hiden_size": {"low": 8, "high": 16}}}, "did you mean model.hidden_size"),
    "wrong type": ({"space": {"model.hidden_size": {"choices": ["big"]}}}, "model.hidden_size"),
    "low > high": ({"space": {"model.hidden_size": {"low": 16, "high": 8}}}, "low 16 > high 8"),
    "log with low <= 0": (
        {"space": {"train.learning_rate": {"low": 0.0, "high": 0.1, "log": True}}},
        "log scale needs low > 0",
    ),
    "unknown sampler": ({"sampler": {"type": "bayes"}}, "sampler.type"),
    "unknown pruner": ({"pruner": {"type": "early"}}, "pruner.type"),
    "unknown pruner setting": ({"pruner": {"type": "median", "patience": 3}}, "pruner.patience"),
}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A real study with two finished trials, and a snapshot of everything stored."""
    folder = tmp_path_factory.mktemp("bad-input")
    spec = write_spec(folder)
    result = run_cli(folder, spec, "--threads", "1")
    assert result.exit_code == 0, result.stderr
    run = invoke(
        "train",
        "train.lengths=2",
        "train.n_epochs=1",
        "model.hidden_size=8",
        "train.num_threads=1",
        f"train.log_path={folder / 'runs'}",
        "train.run_name=r",
        "train.device=cpu",
    )
    assert run.exit_code == 0, run.stderr
    (folder / "good.csv").write_text("12,3\n")
    return folder


def snapshot(folder: Path) -> list:
    url = storage_url(folder)
    state = []
    for summary in optuna.get_all_study_names(url):
        study = optuna.load_study(study_name=summary, storage=url)
        state.append(
            (summary, study.user_attrs, [(t.number, t.state, t.values, t.params, t.user_attrs) for t in study.trials])
        )
    return state


def cases(folder: Path) -> dict[str, tuple[list, str]]:
    url = storage_url(folder)
    checkpoint = folder / "runs" / "r" / "best.pt"
    csv = {name: folder / f"{name}.csv" for name in ("malformed", "empty")}
    csv["malformed"].write_text("12,3\n1x,1\n")
    csv["empty"].write_text("")
    (folder / "not-a-checkpoint.pt").write_text("hello\n")
    table = {
        "data: bad lengths": (["data", folder / "d.csv", "--lengths", "two"], "lengths"),
        "data: sample 0": (["data", folder / "d.csv", "--sample", "0"], "'--sample'"),
        "data: a negative seed (numpy's traceback before)": (
            ["data", folder / "d.csv", "--lengths", "7", "--sample", "5", "--seed", "-1"],
            "'--seed'",
        ),
        "evaluate: a device name torch does not know (a traceback before)": (
            ["evaluate", checkpoint, folder / "good.csv", "--device", "CPU"],
            "--device 'CPU': expected auto, cpu, cuda, cuda:N or mps; did you mean cpu?",
        ),
        "evaluate: a folder for the checkpoint (was: no such file)": (
            ["evaluate", folder / "runs", folder / "good.csv"],
            "runs: is a folder, not a checkpoint file",
        ),
        "evaluate: a folder for the CSV (was: no such file)": (
            ["evaluate", checkpoint, folder],
            "is a folder, not a file",
        ),
        "train: a folder for --config (was: no such config file)": (
            ["train", "--config", folder],
            "is a folder, not a config file",
        ),
        "run: a study name that cannot name a file": (
            ["run", folder / "spec.yaml", "--storage", url, "--name", "a/b"],
            "a study name is 1 to 64 letters, digits",
        ),
        "train: unknown key": (["train", "model.hiden_size=8"], "did you mean model.hidden_size"),
        "train: wrong type": (["train", "train.n_epochs=abc"], "train.n_epochs"),
        "train: negative learning rate": (["train", "train.learning_rate=-1"], "train.learning_rate"),
        "train: hidden size 0": (["train", "model.hidden_size=0"], "model.hidden_size"),
        "train: lrnn without a head": (["train", "model.model_type=lrnn"], "give it model.head_size > 0"),
        "train: forget bias on an rnn": (
            ["train", "model.model_type=rnn", "model.forget_bias=1"],
            "model.forget_bias applies to model.model_type=lstm or gru",
        ),
        "train: split fraction 1.5": (["train", "train.train_split_fraction=1.5"], "train.train_split_fraction"),
        "train: missing dataset": (["train", f"train.dataset_path={folder / 'nope.csv'}"], "no such file"),
        "evaluate: malformed CSV": (["evaluate", checkpoint, csv["malformed"]], "malformed.csv:2"),
        "evaluate: empty CSV": (["evaluate", checkpoint, csv["empty"]], "empty"),
        "evaluate: missing CSV": (["evaluate", checkpoint, folder / "nope.csv"], "no such file"),
        "evaluate: not a checkpoint": (
            ["evaluate", folder / "not-a-checkpoint.pt", folder / "good.csv"],
            "not a readable checkpoint",
        ),
        "predict: non-digit sequence": (["predict", checkpoint, "12a"], "'12a' is not a digit sequence"),
        "predict: empty sequence": (["predict", checkpoint, ""], "'' is not a digit sequence"),
        "run: missing spec": (["run", folder / "nope.yaml", "--storage", url], "no such study spec"),
        "run: invalid storage URL": (["run", folder / "spec.yaml", "--storage", "nonsense"], "not a URL"),
        "predict: a device this machine lacks (the hint named train.device before)": (
            ["predict", checkpoint, "12", "--device", "mps"],
            "use --device cpu",
        ),
        "ls: unreachable storage": (
            ["ls", "--storage", "postgresql+psycopg://u:secret@127.0.0.1:1/db"],
            "cannot open storage",
        ),
        "best: unknown study": (["best", "nope", "--storage", url], "no study named 'nope'"),
        "export: unknown study": (
            ["export", "nope", "--out", folder / "x.csv", "--storage", url],
            "no study named 'nope'",
        ),
        "rerun: unknown study": (["rerun", "nope", "0", "--storage", url], "no study named 'nope'"),
        "rerun: unknown trial": (["rerun", "tiny", "99", "--storage", url], "no trial 99"),
        "report: unknown study": (
            ["report", "nope", "--storage", url, "--out", folder / "r.html"],
            "no study named 'nope'",
        ),
        "predict: 10,001 digits": (["predict", checkpoint, "1" * 10_001], "has 10,001 digits; give 1 to 10,000 digits"),
        "predict: a huge argument": (["predict", checkpoint, "x" * 100_000], "characters) is not a digit sequence"),
        "run: more threads than cores": (
            ["run", folder / "spec.yaml", "--storage", url, "--workers", 64],
            "add --oversubscribe",
        ),
        "run: workers 0 (typer's own check)": (["run", folder / "spec.yaml", "--workers", 0], "see sweep run --help"),
        "dashboard: a host that is not this machine": (
            ["dashboard", "--storage", url, "--host", "999.1.1.1"],
            "--host must be an address of this machine",
        ),
        "rerun: neither a trial nor --top": (["rerun", "tiny", "--storage", url], "give a TRIAL number or --top K"),
        "unknown command": (["nosuch"], "No such command 'nosuch'"),
        "rerun: more threads than cores": (
            ["rerun", "tiny", "--top", 1, "--workers", 64, "--storage", url],
            "--oversubscribe",
        ),
        "report: a study named twice": (["report", "tiny", "tiny", "--storage", url], "named twice"),
        "rerun: a seed out of range": (
            ["rerun", "tiny", "0", "--seeds", "0,99999999999", "--storage", url],
            "train.seed",
        ),
    }
    for name, (changes, message) in SPEC_MISTAKES.items():
        spec = spec_dict(**{k: v for k, v in changes.items() if k != "space"})
        if "space" in changes:
            spec["space"] = {**spec["space"], **changes["space"]}
        path = write_spec(folder, f"bad-{len(table)}.yaml", spec)
        table[f"run: spec {name}"] = (["run", path, "--storage", url], message)
    changed = spec_dict()
    changed["space"] = {**changed["space"], "model.hidden_size": {"low": 8, "high": 32}}
    table["run: another space under the same name"] = (
        ["run", write_spec(folder, "changed.yaml", changed), "--storage", url],
        "--name",
    )
    return table


def test_every_bad_input_is_one_line_exit_2_and_changes_nothing(stored, monkeypatch):
    monkeypatch.chdir(stored)
    before = snapshot(stored)
    results = {}
    for name, (args, message) in cases(stored).items():
        line = assert_one_error_line(invoke(*args))
        assert message in line, (name, line)
        assert "secret" not in line
        results[name] = line
    assert snapshot(stored) == before  # nothing stored was lost or changed
    assert not (stored / "d.csv").exists() and not (stored / "x.csv").exists() and not (stored / "r.html").exists()
    assert len(results) >= 30


def test_dashboard_port_in_use(stored):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = assert_one_error_line(invoke("dashboard", "--storage", storage_url(stored), "--port", port))
    assert str(port) in line and "pick another --port" in line


def test_unwritable_places_give_one_line_and_leave_nothing_half_written(stored):
    blocker = stored / "a-file"
    blocker.write_text("not a folder\n")
    # A report or export under a path whose parent is a file cannot be written (root ignores chmod).
    for args in (
        ["report", "tiny", "--out", blocker / "r.html"],
        ["export", "tiny", "--out", blocker / "t.csv"],
        ["data", blocker / "d.csv", "--lengths", "2"],
    ):
        line = assert_one_error_line(
            invoke(*args, *(["--storage", storage_url(stored)] if args[0] != "data" else [])), code=1
        )
        assert "a-file" in line
    line = assert_one_error_line(
        invoke("run", stored / "spec.yaml", "--storage", storage_url(stored), "--artifacts", blocker / "c")
    )
    assert "cannot write checkpoints" in line
    assert blocker.read_text() == "not a folder\n"
    assert not list(stored.rglob("*.tmp"))  # no temporary file left behind
