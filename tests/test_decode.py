"""digitsum.decode: batched greedy decoding against a naive one-row-at-a-time decoder, exact match, the
teacher-forced loss; K stacked models each on its own rows, as each alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import needed_by

from digitsum import decode
from digitsum.config import MODEL_TYPES, ModelConfig
from digitsum.data import EOA, EOS, PAD, Rows, encode, encode_prompts, make_rows
from digitsum.decode import (
    accuracy,
    accuracy_from_matches,
    answers_in_range,
    answers_to_numbers,
    answers_to_text,
    exact_matches,
    greedy_decode,
    max_answer_tokens,
)
from digitsum.model import DigitSumModel

pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(model_type: str, seed: int = 0, num_layers: int = 1, eoa_bias: float = 0.0, **kwargs) -> DigitSumModel:
    torch.manual_seed(seed)
    if model_type == "lrnn" and num_layers > 1:
        pytest.skip("an lrnn has one layer")
    model = DigitSumModel(
        ModelConfig(
            model_type=model_type,
            hidden_size=16,
            embedding_dim=8,
            num_layers=num_layers,
            **{**needed_by(model_type), **kwargs},
        )
    )
    logits = model.head[-1] if isinstance(model.head, torch.nn.Sequential) else model.head
    with torch.no_grad():
        logits.weight.mul_(6.0)  # sharper, more varied argmax than a fresh init
        logits.bias[EOA] += eoa_bias
    return model


@torch.no_grad()
def reference_decode(model: DigitSumModel, x: str, steps: int) -> list[int]:
    """Feed the prompt one token at a time, then greedy-decode one token at a time; PAD after EOA."""
    model.eval()
    state = None
    for token in [int(c) for c in x] + [EOS]:
        logits, state = model(torch.tensor([[token]]), state)
    out: list[int] = []
    while len(out) < steps:
        token = int(logits[0, -1].argmax())
        out.append(token)
        if token == EOA:
            break
        logits, state = model(torch.tensor([[token]]), state)
    return out + [PAD] * (steps - len(out))


def mixed_rows() -> Rows:
    """Rows of lengths 1 to 4 in shuffled order, so prompt-length groups interleave."""
    rows = make_rows([1, 2, 3, 4], sample=12, seed=3)
    order = np.random.default_rng(0).permutation(len(rows))
    return rows.take(order)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize(("seed", "num_layers", "eoa_bias"), [(0, 1, 0.0), (1, 2, 2.0), (2, 1, 4.0)])
def test_greedy_decode_equals_the_naive_decoder(model_type, seed, num_layers, eoa_bias):
    rows = mixed_rows()
    data = encode(rows)
    model = make_model(model_type, seed=seed, num_layers=num_layers, eoa_bias=eoa_bias)
    decoded = greedy_decode(model, data)
    steps = max_answer_tokens(4)
    assert decoded.shape == (len(rows), steps)
    expected = torch.tensor([reference_decode(model, x, steps) for x in rows.x.tolist()])
    assert torch.equal(decoded, expected)


def test_reference_comparison_covers_early_and_late_eoa():
    """The comparison above is only meaningful if rows stop at different steps (and some never)."""
    rows = mixed_rows()
    seen_stop_steps: set[int] = set()
    for model_type in MODEL_TYPES:
        for seed, eoa_bias in [(0, 0.0), (1, 2.0), (2, 4.0)]:
            decoded = greedy_decode(make_model(model_type, seed=seed, eoa_bias=eoa_bias), encode(rows))
            has = (decoded == EOA).any(dim=1)
            seen_stop_steps |= set((decoded == EOA).int().argmax(dim=1)[has].tolist())
            if not bool(has.all()):
                seen_stop_steps.add(-1)
    assert -1 in seen_stop_steps and len(seen_stop_steps) >= 3, seen_stop_steps


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_greedy_decode_in_chunks_and_with_fixed_steps(model_type, monkeypatch):
    rows = mixed_rows()
    data = encode(rows)
    model = make_model(model_type, seed=4, eoa_bias=2.0)
    whole = greedy_decode(model, data)
    monkeypatch.setattr(
        decode, "chunk_rows", lambda hidden_size, models, width=0, head_size=0: 5
    )  # 48 rows in 10 chunks
    assert torch.equal(greedy_decode(model, data), whole)
    short = greedy_decode(model, data, steps=2)
    assert short.shape == (len(rows), 2)
    assert torch.equal(short, torch.tensor([reference_decode(model, x, 2) for x in rows.x.tolist()]))
    long = greedy_decode(model, data, steps=7)
    assert torch.equal(long, torch.tensor([reference_decode(model, x, 7) for x in rows.x.tolist()]))


def test_greedy_decode_row_does_not_depend_on_its_batch():
    model = make_model("lstm", seed=5, eoa_bias=2.0)
    rows = mixed_rows()
    together = greedy_decode(model, encode(rows), steps=4)
    for i in [0, 7, 30]:
        alone = greedy_decode(model, encode(rows.take(np.array([i]))), steps=4)
        assert torch.equal(alone[0], together[i])


def test_greedy_decode_restores_training_mode_and_does_not_track_gradients():
    model = make_model("gru", dropout=0.5, num_layers=2)
    model.train()
    data = encode(mixed_rows())
    first = greedy_decode(model, data)
    assert model.training
    assert torch.equal(greedy_decode(model, data), first)  # eval mode inside: no dropout noise
    assert not first.requires_grad
    model.eval()
    greedy_decode(model, data)
    assert not model.training


def test_pad_after_eoa():
    model = make_model("rnn", seed=1, eoa_bias=3.0)
    decoded = greedy_decode(model, encode(mixed_rows()), steps=6)
    for row in decoded.tolist():
        if EOA in row:
            assert set(row[row.index(EOA) + 1 :]) <= {PAD}
    assert (decoded == EOA).any()


def test_max_answer_tokens():
    assert max_answer_tokens(1) == 2  # "9", EOA
    assert max_answer_tokens(2) == 3  # "18", EOA
    assert max_answer_tokens(4) == 3  # "36", EOA
    assert max_answer_tokens(11) == 3  # "99", EOA
    assert max_answer_tokens(12) == 4  # "108", EOA
    assert max_answer_tokens(18) == 4  # "162", EOA


# ---------------------------------------------------------------------------------------------
# exact_matches


def answers_for(*ys: int) -> torch.Tensor:
    rows = Rows(np.array(["9" * 4] * len(ys)), np.array(ys, dtype=np.int64))
    return encode(rows).answers


def test_exact_matches_semantics():
    answers = answers_for(5, 5, 5, 5, 5, 36, 36, 36, 36, 36, 0)
    decoded = torch.tensor(
        [
            [5, EOA, PAD],  # right
            [5, EOA, 7],  # right: whatever follows EOA does not count
            [6, EOA, PAD],  # wrong digit
            [5, PAD, PAD],  # missing EOA
            [0, 5, EOA],  # leading zero: "05" is not "5"
            [3, 6, EOA],  # right
            [3, 6, 6],  # extra digit instead of EOA
            [3, EOA, PAD],  # missing digit
            [EOA, PAD, PAD],  # empty answer
            [6, 3, EOA],  # digits swapped
            [0, EOA, PAD],  # right: zero
        ]
    )
    assert exact_matches(decoded, answers).tolist() == [
        True,
        True,
        False,
        False,
        False,
        True,
        False,
        False,
        False,
        False,
        True,
    ]


def test_exact_matches_with_different_widths():
    answers = answers_for(36, 5)  # width 3
    assert exact_matches(torch.tensor([[3, 6], [5, EOA]]), answers).tolist() == [False, True]  # no room for EOA
    wide = torch.tensor([[3, 6, EOA, PAD, PAD], [5, 1, EOA, PAD, PAD]])
    assert exact_matches(wide, answers).tolist() == [True, False]


def test_exact_matches_uses_the_encoded_answers_of_prompts():
    answers = encode_prompts(["1294", "0"]).answers
    decoded = torch.tensor([[1, 6, EOA], [0, EOA, PAD]])
    assert exact_matches(decoded, answers).tolist() == [True, True]


# ---------------------------------------------------------------------------------------------
# accuracy


def test_accuracy_from_matches_per_length():
    correct = torch.tensor([True, False, True, True, False, False, True])
    lengths = torch.tensor([2, 2, 3, 3, 3, 5, 5])
    acc = accuracy_from_matches(correct, lengths)
    assert acc.exact_match == pytest.approx(4 / 7)
    assert acc.n_rows == 7
    assert acc.by_length == {2: 0.5, 3: pytest.approx(2 / 3), 5: 0.5}
    assert acc.rows_by_length == {2: 2, 3: 3, 5: 2}
    assert acc.to_dict() == {
        "exact_match": pytest.approx(4 / 7),
        "n_rows": 7,
        "by_length": {"2": 0.5, "3": pytest.approx(2 / 3), "5": 0.5},
        "rows_by_length": {"2": 2, "3": 3, "5": 2},
    }


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_accuracy_matches_the_naive_decoder(model_type):
    rows = mixed_rows()
    data = encode(rows)
    model = make_model(model_type, seed=2, eoa_bias=2.0)
    steps = max_answer_tokens(4)
    texts = answers_to_text(torch.tensor([reference_decode(model, x, steps) for x in rows.x.tolist()]))
    right = np.array([t == str(y) for t, y in zip(texts, rows.y.tolist(), strict=True)])
    acc = accuracy(model, data)
    assert acc.exact_match == pytest.approx(right.mean())
    assert acc.n_rows == len(rows)
    assert acc.rows_by_length == {1: 10, 2: 12, 3: 12, 4: 12}
    lengths = rows.lengths
    assert acc.by_length == {n: pytest.approx(right[lengths == n].mean()) for n in (1, 2, 3, 4)}


def test_accuracy_of_a_rigged_model():
    """accuracy() on a model rigged to always answer "1": right exactly for the rows that sum to 1."""
    torch.manual_seed(0)
    model = DigitSumModel(ModelConfig(model_type="rnn", hidden_size=4, embedding_dim=0))
    with torch.no_grad():
        model.rnn.weight_ih_l0.zero_()
        model.rnn.weight_hh_l0.zero_()
        model.rnn.bias_ih_l0.zero_()
        model.rnn.bias_hh_l0.zero_()
        model.rnn.weight_ih_l0[0, 1] = 5.0  # input token 1 -> hidden unit 0 on
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[1] = 1.0  # by default say "1"
        model.head.weight[EOA, 0] = 10.0  # after reading a "1", say EOA
    rows = make_rows([1, 2])
    acc = accuracy(model, encode(rows))
    assert acc.by_length == {1: 0.1, 2: 0.02}  # "1"; "01" and "10"
    assert acc.exact_match == pytest.approx(3 / 110)
    assert acc.rows_by_length == {1: 10, 2: 100}


# ---------------------------------------------------------------------------------------------
# answers_to_numbers / answers_to_text


def test_answers_to_numbers_and_text():
    decoded = torch.tensor(
        [
            [1, 6, EOA, PAD],  # 16
            [0, EOA, PAD, PAD],  # 0
            [3, 6, 6, 6],  # no EOA
            [EOS, EOA, PAD, PAD],  # a non-digit
            [1, EOS, 2, EOA],  # a non-digit inside
            [1, 0, 8, EOA],  # 108
            [0, 5, EOA, PAD],  # "05": well-formed text, number 5
            [7, EOA, 3, EOA],  # what follows the first EOA is ignored
        ]
    )
    assert answers_to_numbers(decoded).tolist() == [16, 0, -1, -1, -1, 108, 5, 7]
    assert answers_to_numbers(decoded).dtype == np.int64
    assert answers_to_text(decoded) == ["16", "0", None, None, None, "108", "05", "7"]


def test_answers_to_numbers_of_an_empty_answer():
    assert answers_to_numbers(torch.tensor([[EOA, PAD]])).tolist() == [-1]


def test_answers_to_text_of_an_empty_answer_is_none():
    assert answers_to_text(torch.tensor([[EOA, PAD]])) == [None]


def test_chunks_shrink_as_the_hidden_state_grows():
    assert decode.chunk_rows(64) > decode.chunk_rows(128) > decode.chunk_rows(256)
    assert decode.chunk_rows(64) * 64 == decode.CHUNK_FLOATS
    assert decode.chunk_rows(10**6) == 256  # a floor, so huge models still decode in batches
    assert decode.chunk_rows(64, 4) * 4 == decode.chunk_rows(64)  # K models share a chunk's floats


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_accuracy_in_range_is_the_score_over_the_answers_seen(model_type):
    rows = mixed_rows()
    data = encode(rows)
    model = make_model(model_type, seed=3, eoa_bias=2.0)
    seen = np.array([0, 1, 2, 3, 5, 8, 13])  # answers "seen in training"
    mask = answers_in_range(rows.y, seen)
    assert mask.tolist() == [int(y) in set(seen.tolist()) for y in rows.y]
    acc = accuracy(model, data, mask)
    right = answers_to_numbers(greedy_decode(model, data)) == rows.y
    assert acc.exact_match == pytest.approx(float(right.mean()))
    assert acc.in_range is not None and acc.in_range.n_rows == int(mask.sum())
    assert acc.in_range.exact_match == pytest.approx(float(right[mask].mean()))
    assert acc.to_dict()["in_range"]["n_rows"] == int(mask.sum())
    assert accuracy(model, data, np.zeros(len(rows), dtype=bool)).in_range is None  # no row in range
    assert accuracy(model, data).in_range is None


# ---------------------------------------------------------------------------------------------
# K models at once, each on its own rows


def seeded_splits(k: int = 3) -> list:
    from digitsum.config import TrainConfig
    from digitsum.datasets import data_split

    return [encode(data_split(TrainConfig(lengths="1-3", seed=seed))[1]) for seed in range(k)]


@pytest.mark.parametrize(("model_type", "num_layers"), [("lstm", 1), ("gru", 2), ("rnn", 1), ("lrnn", 1)])
def test_k_models_decode_score_and_lose_as_each_alone(model_type, num_layers, monkeypatch):
    from digitsum.stacked import stack

    models = [make_model(model_type, seed=seed, num_layers=num_layers, eoa_bias=1.0) for seed in range(3)]
    datas = seeded_splits()
    stacked = stack(models)
    monkeypatch.setattr(
        decode, "chunk_rows", lambda hidden_size, models, width=0, head_size=0: 50
    )  # several chunks of each
    decoded = decode.decode(stacked, datas)
    scores = decode.accuracies(stacked, datas)
    losses = decode.losses(stacked, datas)
    for k, model in enumerate(models):
        assert torch.equal(decoded[k], greedy_decode(model, datas[k]))
        assert torch.equal(
            decoded[k], torch.tensor([reference_decode(model, x, decoded[k].shape[1]) for x in data_x(datas[k])])
        )
        assert scores[k] == accuracy(model, datas[k])
        assert losses[k] == pytest.approx(decode.losses(stack([model]), [datas[k]])[0], rel=1e-5)


def data_x(data) -> list[str]:
    return [
        "".join(map(str, row[:n])) for row, n in zip(data.inputs.tolist(), data.input_lengths.tolist(), strict=True)
    ]


def test_score_models_scores_each_model_on_the_same_rows():
    models = [make_model("gru", seed=seed, eoa_bias=1.0) for seed in range(3)]
    data = encode(mixed_rows())
    seen = [np.array([1, 2, 3]), None, np.array([5])]
    masks = [answers_in_range(mixed_rows().y, s) if s is not None else None for s in seen]
    scores = decode.score_models(models, mixed_rows(), masks)
    assert scores == [accuracy(m, data, mask) for m, mask in zip(models, masks, strict=True)]


def test_score_models_encodes_long_inputs_a_block_at_a_time(monkeypatch):
    from digitsum.data import make_rows

    rows = make_rows([40, 60], sample=30, seed=2)
    models = [make_model("lstm", seed=seed, eoa_bias=1.0) for seed in range(2)]
    whole = decode.score_models(models, rows, [None, None])
    monkeypatch.setattr(decode, "BLOCK_TOKENS", 7 * 68)  # blocks of 7 rows: 9 blocks
    assert decode.score_models(models, rows, [None, None]) == whole
    assert whole == [accuracy(m, encode(rows)) for m in models]


def test_chunks_of_long_rows_hold_fewer_rows():
    assert decode.chunk_rows(64, 1, 20) == decode.chunk_rows(64)
    assert decode.chunk_rows(64, 1, 1000) == decode.CHUNK_FLOATS * 32 // (64 * 1000)
    assert decode.chunk_rows(24, 1, 1000, head_size=256) == decode.CHUNK_FLOATS * 32 // (256 * 1000)  # the head
    assert decode.chunk_rows(64, 1, 10**6) == 16


# ---------------------------------------------------------------------------------------------
# losses: the teacher-forced validation loss


def test_loss_is_the_mean_cross_entropy_over_answer_positions(monkeypatch):
    from torch.nn import functional as F

    from digitsum.data import IGNORE, N_OUTPUT_TOKENS
    from digitsum.stacked import stack

    torch.manual_seed(0)
    model = DigitSumModel(ModelConfig(model_type="gru", hidden_size=8, embedding_dim=4, dropout=0.5))
    data = encode(make_rows([1, 2]))
    with torch.no_grad():
        model.eval()
        logits, _ = model(data.inputs)
        expected = F.cross_entropy(logits.reshape(-1, N_OUTPUT_TOKENS), data.targets.reshape(-1), ignore_index=IGNORE)
    stacked = stack([model.train()])
    assert decode.losses(stacked, [data])[0] == pytest.approx(float(expected), rel=1e-5)
    monkeypatch.setattr(decode, "chunk_rows", lambda hidden_size, models, width=0, head_size=0: 7)
    assert decode.losses(stacked, [data])[0] == pytest.approx(float(expected), rel=1e-5)
    assert stacked.training  # mode restored


def test_loss_counts_every_answer_token_equally():
    """Rows with longer answers weigh more: it is a per-token mean, not a mean of row means."""
    from digitsum.data import IGNORE
    from digitsum.stacked import stack

    torch.manual_seed(0)
    stacked = stack([DigitSumModel(ModelConfig(model_type="rnn", hidden_size=8, embedding_dim=4)).eval()])
    data = encode(make_rows([2]))
    per_row = [decode.losses(stacked, [data.take(torch.tensor([i]))])[0] for i in range(len(data))]
    tokens = (data.targets != IGNORE).sum(dim=1).double()
    expected = float((torch.tensor(per_row, dtype=torch.double) * tokens).sum() / tokens.sum())
    assert decode.losses(stacked, [data])[0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_one_teacher_forced_pass_gives_greedy_decodings_exact_match(model_type):
    """A row is decoded exactly iff the teacher-forced argmax is right at every answer position: checked on
    a model trained part of the way (many rows right, many wrong), per input length and per row."""
    from digitsum.config import Config, TrainConfig
    from digitsum.members import seed_members
    from digitsum.stacked import stack
    from digitsum.train import fit

    extra = needed_by(model_type)
    config = Config(
        ModelConfig(model_type=model_type, hidden_size=16, embedding_dim=8, **extra),
        TrainConfig(lengths="1-3", n_epochs=4, batch_size=16, learning_rate=0.01, num_threads=1),
    )
    (trained,) = fit(seed_members(config))
    data = encode(make_rows([1, 2, 3, 4]))  # length 4 unseen: mostly wrong
    greedy = exact_matches(greedy_decode(trained.model, data), data.answers)
    assert 50 < int(greedy.sum()) < len(data) - 50  # many rows right, many wrong
    scored = decode.accuracies(stack([trained.model]), [data])[0]
    assert scored == accuracy_from_matches(greedy, data.input_lengths)
    for length in (1, 2, 3, 4):  # and row by row: each length's rows on their own
        rows = torch.nonzero(data.input_lengths == length).squeeze(1)
        part = data.take(rows)
        assert decode.accuracies(stack([trained.model]), [part])[0].exact_match == float(greedy[rows].double().mean())
