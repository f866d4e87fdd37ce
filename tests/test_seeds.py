"""K seeds trained together are the models K separate runs train: per seed, within float rounding."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from digitsum.config import Config, ModelConfig, TrainConfig
from digitsum.datasets import data_split
from digitsum.seeds import check_stackable, fit_seeds
from digitsum.train import fit

SEEDS = [0, 1, 2]


def tiny(model_type: str, **train) -> Config:
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
        ModelConfig(model_type=model_type, hidden_size=12, embedding_dim=6), TrainConfig(**{**settings, **train})
    )


def alone(config: Config, seed: int):
    seeded = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
    return fit(seeded, *data_split(seeded.train))


@pytest.mark.parametrize("model_type", ["rnn", "lstm", "gru"])
def test_each_seed_is_the_model_its_own_run_trains(model_type, one_thread):
    config = tiny(model_type)
    together = fit_seeds(config, SEEDS)
    for seed, stacked in zip(SEEDS, together, strict=True):
        run = alone(config, seed)
        for mine, theirs in zip(stacked.history, run.history, strict=True):
            assert mine.train_loss == pytest.approx(theirs.train_loss, rel=1e-4)
            assert mine.val_loss == pytest.approx(theirs.val_loss, rel=1e-4)
            assert mine.val_exact_match == pytest.approx(theirs.val_exact_match, abs=0.03)  # a row may flip
        for (name, mine_w), theirs_w in zip(
            stacked.model.state_dict().items(), run.model.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(mine_w, theirs_w, rtol=1e-3, atol=1e-4, msg=f"seed {seed}: {name}")


def test_the_seeds_differ():
    first, second = fit_seeds(tiny("gru", n_epochs=1), [0, 1])
    assert not torch.equal(first.model.rnn.weight_hh_l0, second.model.rnn.weight_hh_l0)


def test_what_it_cannot_train_yet_is_one_line():
    for config in (tiny("lrnn"), tiny("lstm", sum_state_weight=1.0), tiny("lstm", state_noise=0.1)):
        with pytest.raises(ValueError, match="rnn, lstm or gru without"):
            check_stackable(config)
