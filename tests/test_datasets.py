"""digitsum.datasets: the cached train/validation split and the probe rows trials share."""

from __future__ import annotations

from digitsum import datasets
from digitsum.config import TrainConfig
from digitsum.datasets import data_split, load_rows, probe_rows, split_rows
from digitsum.lengths import Probe


def test_probe_rows_all_or_a_sample():
    assert probe_rows(Probe((), 100)) is None
    assert len(probe_rows(Probe((3,), 10_000))) == 1000
    sampled = probe_rows(Probe((6,), 300))
    assert len(sampled) == 300 and set(map(len, sampled.x)) == {6}
    again = datasets._probe_rows.__wrapped__(Probe((6,), 300), ())  # uncached: seeded, the same rows every time
    assert list(again.x) == list(sampled.x)


def test_data_split_is_shared_by_configs_that_differ_outside_the_data():
    a = TrainConfig(lengths="1-2", n_epochs=3, learning_rate=0.01)
    b = TrainConfig(lengths="1-2", n_epochs=9, batch_size=4)
    assert data_split(a) is data_split(b)  # one split per data setting, not per trial
    train, val = data_split(a)
    expected_train, expected_val = split_rows(load_rows(a), a)
    assert list(train.x) == list(expected_train.x) and list(val.x) == list(expected_val.x)
    assert data_split(TrainConfig(lengths="1-2", seed=1)) is not data_split(a)  # the seed draws the split
