"""digitsum.fit_state: a fit saved between two epochs and resumed gives what the fit that never
stopped gives, bit for bit on the CPU, an exploit (population-based training) included."""

from __future__ import annotations

import dataclasses

import torch

from digitsum import config as cfg
from digitsum.fit_state import load_state, save_state
from digitsum.members import seed_members
from digitsum.train import Exploit, fit


def _members(tiny_config, n_epochs: int = 4):
    config = tiny_config(n_epochs=n_epochs)
    return seed_members(dataclasses.replace(config, train=dataclasses.replace(config.train, n_seeds=3)))


def _exploit_at_2(members):
    faster = cfg.apply(members[1].config, {"train.learning_rate": 0.05})

    def on_epoch(results):
        return Exploit(copies={1: 0}, configs={1: faster}) if results[0].epoch == 2 else None

    return on_epoch


def _same(first, second) -> None:
    for a, b in zip(first, second, strict=True):
        assert [dataclasses.asdict(r) | {"seconds": 0, "train_seconds": 0} for r in a.history] == [
            dataclasses.asdict(r) | {"seconds": 0, "train_seconds": 0} for r in b.history
        ]
        assert a.best_epoch == b.best_epoch and a.best_exact_match == b.best_exact_match
        for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
            assert torch.equal(x, y)


def test_a_fit_resumed_from_its_state_is_the_fit_that_never_stopped(tiny_config, tmp_path):
    members = _members(tiny_config)
    whole = fit(members, _exploit_at_2(members))
    states = []
    fit(members, _exploit_at_2(members), on_state=states.append, state_every=2)
    assert [s.epoch for s in states] == [2]  # every 2 epochs, before the last
    save_state(states[0], tmp_path / "state.pt")
    state = load_state(tmp_path / "state.pt")
    assert state.configs[1].train.learning_rate == 0.05  # the exploit's change is in it
    resumed = fit(members, None, resume=state)
    _same(whole, resumed)
