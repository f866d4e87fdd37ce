"""digitsum.train: fit on tiny data (lengths 1-2, hidden 16, a few epochs, one thread), one member and
many: each member is the model its own run trains."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from digitsum.checkpoint import load_checkpoint
from digitsum.config import MODEL_TYPES, Config, ModelConfig, TrainConfig
from digitsum.data import N_OUTPUT_TOKENS, encode, make_rows, write_csv
from digitsum.datasets import data_split, load_rows, split_rows
from digitsum.decode import accuracy, answers_to_numbers, greedy_decode
from digitsum.errors import DataError
from digitsum.members import Member, seed_members
from digitsum.model import count_parameters
from digitsum.train import EpochResult, FitResult, TrainingDiverged, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def split(config, rows):
    return split_rows(rows, config.train)


def fit_one(config, train, val, on_epoch=None, **options) -> FitResult:
    """One member: fit's case K = 1, with on_epoch hearing its one result."""
    hear = (lambda results: on_epoch(results[0])) if on_epoch is not None else None
    (result,) = fit([Member(config, train, val)], hear, **options)
    return result


def comparable(history: list[EpochResult]) -> list[tuple]:
    """Everything but the wall-clock seconds."""
    return [(e.epoch, e.train_loss, e.val_loss, e.val_exact_match, e.learning_rate) for e in history]


def with_train(config, **changes):
    """Set train fields directly, bypassing config.py's range checks."""
    return replace(config, train=replace(config.train, **changes))


# ---------------------------------------------------------------------------------------------
# fit


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_fit_lowers_the_loss(model_type, tiny_config, tiny_rows):
    config = tiny_config(model={"model_type": model_type})
    train, val = split(config, tiny_rows)
    result = fit_one(config, train, val)
    history = result.history
    assert [e.epoch for e in history] == [1, 2, 3]
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].val_loss < history[0].val_loss
    # A fresh model knows nothing: its first epoch's loss is near log(12) or below, never 0.
    assert 0.5 < history[0].train_loss < 2 * math.log(N_OUTPUT_TOKENS)
    for e in history:
        assert 0.0 <= e.val_exact_match <= 1.0 and e.seconds >= 0.0
        assert math.isfinite(e.train_loss) and math.isfinite(e.val_loss)
    assert result.n_parameters == count_parameters(result.model)
    assert result.seconds_per_epoch == pytest.approx(sum(e.seconds for e in history) / 3)


def test_fit_learns_one_digit_sums(tiny_config):
    """Length 1 (y = x): a GRU learns to answer every digit well within 20 epochs."""
    rows = make_rows([1])
    config = tiny_config(n_epochs=20, learning_rate=0.03, batch_size=2, lr_schedule="cosine")
    result = fit_one(config, rows, rows, on_epoch=lambda r: r.val_exact_match == 1.0)
    assert result.best_exact_match == 1.0
    assert result.history[-1].train_loss < 0.5 * result.history[0].train_loss
    decoded = greedy_decode(result.model, encode(rows))
    assert answers_to_numbers(decoded).tolist() == list(range(10))


def test_fit_is_reproducible(tiny_config, tiny_rows):
    config = tiny_config(model={"model_type": "lstm", "num_layers": 2, "dropout": 0.2})
    train, val = split(config, tiny_rows)
    a = fit_one(config, train, val)
    b = fit_one(config, train, val)
    assert comparable(a.history) == comparable(b.history)
    for (name, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


def test_fit_balanced_is_reproducible(tiny_config, tiny_rows):
    config = tiny_config(balance_lengths=True)
    train, val = split(config, tiny_rows)
    assert comparable(fit_one(config, train, val).history) == comparable(fit_one(config, train, val).history)
    plain = fit_one(with_train(config, balance_lengths=False), train, val)
    assert comparable(plain.history) != comparable(fit_one(config, train, val).history)


def test_sum_state_weight_changes_training_and_stays_reproducible(tiny_config, tiny_rows):
    config = tiny_config(balance_lengths=True)
    train, val = split(config, tiny_rows)
    pulled = with_train(config, sum_state_weight=1.0)
    first = fit_one(pulled, train, val)
    assert comparable(first.history) == comparable(fit_one(pulled, train, val).history)
    assert comparable(first.history) != comparable(fit_one(config, train, val).history)
    assert all(math.isfinite(e.train_loss) for e in first.history)


def test_fit_other_seed_differs(tiny_config, tiny_rows):
    config = tiny_config()
    train, val = split(config, tiny_rows)
    a = fit_one(config, train, val)
    b = fit_one(with_train(config, seed=1), train, val)
    assert [e.train_loss for e in a.history] != [e.train_loss for e in b.history]


def test_on_epoch_sees_every_epoch_and_can_stop(tiny_config, tiny_rows):
    config = tiny_config(n_epochs=6)
    train, val = split(config, tiny_rows)
    seen: list[EpochResult] = []

    def on_epoch(result: EpochResult):
        seen.append(result)
        return result.epoch == 2

    result = fit_one(config, train, val, on_epoch=on_epoch)
    assert [e.epoch for e in seen] == [1, 2]
    assert len(result.history) == 2
    assert seen == result.history

    # None and False continue.
    answers = iter([None, False, None])
    result = fit_one(with_train(config, n_epochs=3), train, val, on_epoch=lambda r: next(answers))
    assert len(result.history) == 3


def test_stopping_early_gives_the_same_epochs_as_a_full_run(tiny_config, tiny_rows):
    config = tiny_config(n_epochs=4, lr_schedule="constant")
    train, val = split(config, tiny_rows)
    full = fit_one(config, train, val)
    stopped = fit_one(config, train, val, on_epoch=lambda r: r.epoch == 2)
    assert comparable(stopped.history) == comparable(full.history[:2])


def test_best_epoch_is_kept_and_checkpointed(tiny_config, tiny_rows, tmp_path):
    config = tiny_config(n_epochs=8, learning_rate=0.03)
    train, val = split(config, tiny_rows)
    path = tmp_path / "run" / "best.pt"
    result = fit_one(config, train, val, checkpoints=[path])
    exacts = [e.val_exact_match for e in result.history]
    assert result.best_exact_match == max(exacts)
    assert result.best_epoch == exacts.index(max(exacts)) + 1  # the earliest on ties
    # The returned model holds the best epoch's weights ...
    assert accuracy(result.model, encode(val)).exact_match == result.best_exact_match
    # ... and so does the checkpoint.
    model, payload = load_checkpoint(path)
    assert payload["metrics"] == {"epoch": result.best_epoch, "val_exact_match": result.best_exact_match}
    assert payload["config"] == config.to_dict()
    data = encode(val)
    assert torch.equal(greedy_decode(model, data), greedy_decode(result.model, data))
    for (name, p), (_, q) in zip(model.state_dict().items(), result.model.state_dict().items(), strict=True):
        assert torch.equal(p, q), name
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.pt"]


def test_best_epoch_is_not_the_last_when_training_gets_worse(tiny_config, tiny_rows):
    """Returned weights are the best epoch's, not the last epoch's, when the two differ."""
    config = tiny_config(n_epochs=6, learning_rate=0.03)
    train, val = split(config, tiny_rows)
    # Find a case where the last epoch is not the best by sweeping a few seeds.
    for seed in range(8):
        result = fit_one(with_train(config, seed=seed), train, val)
        if result.history[-1].val_exact_match < result.best_exact_match:
            break
    else:
        pytest.skip("no seed gave a last epoch worse than the best")
    assert result.best_epoch < len(result.history)
    assert accuracy(result.model, encode(val)).exact_match == result.best_exact_match


def test_keep_epoch_last_keeps_the_last_epochs_model(tiny_config, tiny_rows, tmp_path):
    config = tiny_config(n_epochs=6, learning_rate=0.03)
    train, val = split(config, tiny_rows)
    for seed in range(8):  # a seed whose last epoch is not its best, so the two rules differ
        best = fit_one(with_train(config, seed=seed), train, val)
        if best.best_epoch < 6:
            break
    else:
        pytest.skip("no seed's best epoch came before its last")
    path = tmp_path / "best.pt"
    last = fit_one(with_train(config, seed=seed, keep_epoch="last"), train, val, checkpoints=[path])
    assert [e.val_exact_match for e in last.history] == [e.val_exact_match for e in best.history]  # same training
    assert last.best_epoch == 6 and last.best_exact_match == last.history[-1].val_exact_match
    assert accuracy(last.model, encode(val)).exact_match == last.history[-1].val_exact_match
    assert load_checkpoint(path)[1]["metrics"]["epoch"] == 6


def test_no_checkpoint_without_a_path(tiny_config, tiny_rows, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(n_epochs=1)
    fit_one(config, *split(config, tiny_rows))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_training_diverged(model_type, tiny_config, tiny_rows):
    # config.py rejects learning rates above 10; an infinite rate turns the weights into NaN at once.
    config = with_train(tiny_config(model={"model_type": model_type}), learning_rate=float("inf"))
    train, val = split(config, tiny_rows)
    seen = []
    with pytest.raises(TrainingDiverged, match="learning_rate"):
        fit_one(config, train, val, on_epoch=seen.append)
    assert seen == []  # raised before the callback, on the first epoch


def test_lr_schedule_constant(tiny_config, tiny_rows):
    config = tiny_config(lr_schedule="constant", learning_rate=0.01)
    result = fit_one(config, *split(config, tiny_rows))
    assert [e.learning_rate for e in result.history] == [0.01, 0.01, 0.01]


def test_lr_schedule_cosine(tiny_config, tiny_rows):
    config = tiny_config(lr_schedule="cosine", learning_rate=0.01, n_epochs=4, batch_size=16)
    train, val = split(config, tiny_rows)
    result = fit_one(config, train, val)
    steps_per_epoch = math.ceil(len(train) / 16)
    total = steps_per_epoch * 4
    expected = [0.01 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * steps_per_epoch * k / total))) for k in range(4)]
    assert [e.learning_rate for e in result.history] == pytest.approx(expected)
    assert result.history[0].learning_rate == pytest.approx(0.01)
    rates = [e.learning_rate for e in result.history]
    assert all(a > b for a, b in itertools.pairwise(rates))


def test_fit_on_one_hot_multilayer_rnn(tiny_config, tiny_rows):
    config = tiny_config(model={"model_type": "rnn", "embedding_dim": 0, "num_layers": 2, "dropout": 0.1}, n_epochs=2)
    result = fit_one(config, *split(config, tiny_rows))
    assert result.model.embedding is None
    assert len(result.history) == 2


# ---------------------------------------------------------------------------------------------
# load_rows, split_rows, TrainConfig


def test_load_rows_generates_or_reads(tmp_path):
    generated = load_rows(TrainConfig(lengths="1-2"))
    assert len(generated) == 110
    path = tmp_path / "rows.csv"
    write_csv(make_rows([3]), path)
    read = load_rows(TrainConfig(dataset_path=str(path), lengths="1-2"))
    assert len(read) == 1000 and set(read.lengths.tolist()) == {3}
    with pytest.raises(DataError, match="no such file"):
        load_rows(TrainConfig(dataset_path=str(tmp_path / "missing.csv")))


def test_split_rows_uses_fraction_and_seed(tiny_rows):
    train, val = split_rows(tiny_rows, TrainConfig(train_split_fraction=0.8, seed=0))
    assert len(train) + len(val) == 110
    assert 80 <= len(train) <= 96
    assert set(train.x.tolist()).isdisjoint(val.x.tolist())
    again, _ = split_rows(tiny_rows, TrainConfig(train_split_fraction=0.8, seed=0))
    other, _ = split_rows(tiny_rows, TrainConfig(train_split_fraction=0.8, seed=1))
    assert train.x.tolist() == again.x.tolist()
    assert train.x.tolist() != other.x.tolist()
    assert np.array_equal(train.y, np.array([sum(map(int, x)) for x in train.x.tolist()]))


def test_config_to_dict():
    from digitsum.config import Config

    values = Config().to_dict()
    assert set(values) == {"model", "train"}
    assert values["train"]["lengths"] == "2-4" and values["train"]["dataset_path"] is None
    assert values["model"] == ModelConfig().to_dict()


# ---------------------------------------------------------------------------------------------
# Curriculum and state noise


def test_curriculum_grows_the_lengths(tiny_config):
    from digitsum.train import curriculum_length

    rows = make_rows([1, 2, 3, 4])
    config = tiny_config(lengths="1-4", n_epochs=40, curriculum=0.4)
    data = encode(rows)
    stages = [curriculum_length(data, epoch, config.train) for epoch in range(1, 41)]
    assert stages == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [None] * 24
    assert {curriculum_length(data, e, with_train(config, curriculum=0.0).train) for e in range(1, 41)} == {None}


def test_fit_with_curriculum_and_state_noise_is_seeded(tiny_config, tiny_rows):
    config = tiny_config(curriculum=0.5, state_noise=0.05)
    train, val = split(config, tiny_rows)
    first, second = fit_one(config, train, val), fit_one(config, train, val)
    assert comparable(first.history) == comparable(second.history)
    assert comparable(first.history) != comparable(fit_one(with_train(config, state_noise=0.0), train, val).history)
    assert all(math.isfinite(e.train_loss) for e in first.history)


def test_warm_up_builds_every_model_type():
    from digitsum.train import warm_up

    trained = warm_up(num_threads=1)  # the defaults of every type it needs (an lrnn's head) come from warm_up itself
    assert sorted(trained) == sorted(MODEL_TYPES)
    for model_type, result in trained.items():
        assert result.model.config.model_type == model_type
        assert [e.epoch for e in result.history] == [1] and math.isfinite(result.history[0].train_loss)


# ---------------------------------------------------------------------------------------------
# Members: K models trained as one computation, each the model its own run trains


def tiny(model_type: str, model: dict | None = None, **train) -> Config:
    settings = dict(
        lengths="1-2",
        n_epochs=3,
        batch_size=16,
        learning_rate=0.01,
        lr_schedule="cosine",
        device="cpu",
        fused=False,
        num_threads=1,
        grad_clip=1.0,
    )
    return Config(
        ModelConfig(**{"model_type": model_type, "hidden_size": 12, "embedding_dim": 6, **(model or {})}),
        TrainConfig(**{**settings, **train}),
    )


def alone(config: Config) -> FitResult:
    return fit_one(config, *data_split(config.train))


def member(config: Config, **changes) -> Member:
    """A member of config with these train (or model.dropout) values, and its own seed's rows."""
    dropout = changes.pop("dropout", config.model.dropout)
    own = Config(replace(config.model, dropout=dropout), replace(config.train, **changes))
    return Member(own, *data_split(own.train))


def assert_same_run(mine: FitResult, theirs: FitResult, rel: float, weights: float) -> float:
    """Two runs of one member agree within float rounding; returns the largest weight difference."""
    for a, b in zip(mine.history, theirs.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=rel)
        assert a.val_loss == pytest.approx(b.val_loss, rel=rel)
        assert a.val_exact_match == pytest.approx(b.val_exact_match, abs=0.03)  # a row may flip
        assert a.learning_rate == pytest.approx(b.learning_rate, rel=1e-12)
    largest = 0.0
    for (name, p), q in zip(mine.model.state_dict().items(), theirs.model.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=weights, atol=weights / 10, msg=name)
        largest = max(largest, float((p - q).abs().max()))
    return largest


SEEDS = [0, 1, 2]
EQUIVALENT = {
    "rnn": tiny("rnn"),
    "lstm": tiny("lstm"),
    "gru": tiny("gru"),
    "lrnn with the sum-state loss (the counter)": tiny(
        "lrnn", {"head_size": 16, "embedding_dim": 0}, sum_state_weight=5.0
    ),
    "gru with the sum-state loss, a curriculum": tiny("gru", sum_state_weight=1.0, lengths="1-3", curriculum=0.5),
}


@pytest.mark.parametrize("name", sorted(EQUIVALENT))
def test_each_seed_is_the_model_its_own_run_trains(name):
    config = EQUIVALENT[name]
    together = fit(seed_members(replace(config, train=replace(config.train, n_seeds=len(SEEDS)))))
    for seed, result in zip(SEEDS, together, strict=True):
        assert_same_run(result, alone(replace(config, train=replace(config.train, seed=seed))), 1e-4, 1e-3)


# Members that differ in every hyperparameter a member may have (digitsum.members), beside the seed.
DIFFERING = [
    {"seed": 0},
    {"seed": 1, "learning_rate": 0.003, "weight_decay": 0.01, "grad_clip": 0.5, "lr_schedule": "constant"},
    {"seed": 2, "learning_rate": 0.02, "grad_clip": 0.0, "answer_balance": 0.5, "balance_lengths": True},
]


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("rnn", {"sum_state_weight": 2.0}),
        ("lrnn with the sum-state loss (the counter)", {"sum_state_weight": 1.0}),
        ("gru", {"sum_state_weight": 1.0}),
    ],
)
def test_members_that_differ_in_hyperparameters_are_each_their_own_run(name, extra):
    config = EQUIVALENT[name]
    members = [member(config, **changes) for changes in DIFFERING[:2]] + [member(config, **DIFFERING[2], **extra)]
    for own, result in zip(members, fit(members), strict=True):
        assert_same_run(result, alone(own.config), 1e-4, 1e-3)


@pytest.mark.parametrize("model_type", ["lstm", "gru"])
def test_on_the_fused_path_each_member_computes_what_its_own_run_does(model_type):
    """The fused kernel runs each member on its own weights and rows, in tiles that do not depend on the
    other members: a member's numbers are its own run's, whatever its hyperparameters."""
    from digitsum import fused

    if not fused.load():
        pytest.skip("the fused kernel cannot be built here (no C++ compiler)")
    config = tiny(model_type, fused=True)
    members = [member(config, **changes) for changes in DIFFERING]
    for own, result in zip(members, fit(members), strict=True):
        assert_same_run(result, alone(own.config), 1e-6, 1e-5)


def test_the_seeds_differ():
    first, second = fit(seed_members(tiny("gru", n_epochs=1, n_seeds=2)))
    assert not torch.equal(first.model.rnn.weight_hh_l0, second.model.rnn.weight_hh_l0)


def test_dropout_and_state_noise_train_each_member_apart():
    """Random draws cannot match separate runs draw for draw; they train, and members still differ."""
    config = tiny("lstm", {"num_layers": 2, "dropout": 0.2}, state_noise=0.05, n_epochs=2)
    members = [member(config), member(config, seed=1, dropout=0.4, state_noise=0.0)]
    first, second = fit(members)
    assert first.history[-1].train_loss < first.history[0].train_loss
    assert not torch.equal(first.model.rnn.weight_hh_l1, second.model.rnn.weight_hh_l1)
    assert second.model.config.dropout == 0.4  # each member's model is built with its own config


def test_every_member_keeps_its_best_checkpoint_at_every_epoch(tmp_path):
    config = tiny("gru", n_epochs=4, learning_rate=0.03)
    members = [member(config, seed=seed) for seed in SEEDS]
    paths = [tmp_path / f"m{k}" / "best.pt" for k in range(len(members))]
    best: list[float] = [-1.0] * len(members)

    def on_epoch(results: list[EpochResult]) -> bool:
        for k, (result, path) in enumerate(zip(results, paths, strict=True)):
            best[k] = max(best[k], result.val_exact_match)
            _, payload = load_checkpoint(path)  # written before on_epoch hears the epoch
            assert payload["metrics"]["val_exact_match"] == best[k]
            assert payload["config"] == members[k].config.to_dict()
        return results[0].epoch == 3  # stopped: every member's best so far is on disk

    results = fit(members, on_epoch, checkpoints=paths)
    assert [len(r.history) for r in results] == [3, 3, 3]


def test_a_diverged_member_names_its_seed(tiny_config, tiny_rows):
    config = tiny("gru", n_epochs=1)
    members = [member(config), member(config, seed=1, learning_rate=float("inf"))]
    with pytest.raises(TrainingDiverged, match="seed 1: training loss is nan at epoch 1"):
        fit(members)


@pytest.mark.parametrize(("model_type", "fused"), [("gru", True), ("lstm", True), ("rnn", False), ("gru", False)])
def test_members_that_leave_stop_and_the_others_go_on_as_their_own_runs(model_type, fused):
    """A pruned trial's members leave the computation at an epoch; the rest go on, each still its own run."""
    config = tiny(model_type, fused=fused, n_epochs=4)
    members = [member(config, **changes) for changes in DIFFERING]
    heard: list[list[int]] = []

    def on_epoch(results: list[EpochResult]) -> set[int] | None:
        heard.append([r.member for r in results])
        return {1} if results[0].epoch == 2 else None

    results = fit(members, on_epoch)
    assert heard == [[0, 1, 2], [0, 1, 2], [0, 2], [0, 2]]
    assert [len(r.history) for r in results] == [4, 2, 4]
    tight = 1e-6 if fused else 1e-4
    for own, result in zip(members, results, strict=True):
        alone = fit_one(replace(own.config, train=replace(own.config.train, n_epochs=4)), own.train, own.val)
        if result is results[1]:  # it stopped at epoch 2: its epochs are its own run's first two
            alone_history = alone.history[:2]
            assert [e.train_loss for e in result.history] == pytest.approx(
                [e.train_loss for e in alone_history], rel=tight
            )
            continue
        assert_same_run(result, alone, tight, 1e-5 if fused else 1e-3)


def test_when_every_member_leaves_training_stops():
    config = tiny("gru", n_epochs=5)
    results = fit(
        [member(config, seed=s) for s in (0, 1)],
        lambda results: {r.member for r in results} if results[0].epoch == 2 else None,
    )
    assert [len(r.history) for r in results] == [2, 2]
