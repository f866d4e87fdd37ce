"""The reference being beaten: digit-sum training and evaluation in the tutorial's style.

This is how the tutorial this project grew from (rnn_101) trains and checks its model, rewritten
compactly so `bench_core.py` can time it against `digitsum`. It is deliberately *not* optimized;
it is the yardstick, not code to use:

- a ``torch.utils.data.Dataset`` that builds one row's tensors (one-hot inputs, targets) in every
  ``__getitem__`` call;
- a ``DataLoader`` (``num_workers=0``) whose Python collate function pads each batch;
- one-hot inputs into ``nn.LSTM`` + ``nn.Linear``, ``nn.CrossEntropyLoss``, ``torch.optim.Adam``,
  and a ``loss.item()`` per step for the running loss;
- a per-row accuracy check, as a beginner writes it: for each row, feed the prompt, then take
  greedy steps one token at a time, reading each token back with ``.item()``.

To keep the comparison fair it is given the same token ids, the same exact-match rule and the same
answer-length bound as `digitsum` (so a row counts as correct in both or in neither, given the same
weights), gradients off (``torch.no_grad``) during evaluation, and no worker processes (which would
only fight the timed process for the same cores). It has no gradient clipping and no learning-rate
schedule, which makes its training step slightly cheaper than ours, not dearer.

Only torch is imported, so this file stands on its own.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

# The same token ids as digitsum.data, so weights can be shared between the two.
EOS = 10  # end of the input sequence
EOA = 11  # end of the answer
VOCAB_SIZE = 13  # digits, EOS, EOA, and a padding id
N_OUTPUTS = 12  # digits, EOS, EOA
IGNORE = -100


def max_answer_tokens(input_length: int) -> int:
    """Digits of the largest possible sum (9 * length), plus EOA: the decoding bound."""
    return len(str(9 * input_length)) + 1


class DigitSequenceDataset(Dataset):
    """Rows ``(x, y)``: ``x`` a digit string, ``y`` its digit sum. Tensors are built per item."""

    def __init__(self, xs: list[str], ys: list[int]):
        self.xs = list(xs)
        self.ys = [int(y) for y in ys]

    def __len__(self) -> int:
        return len(self.xs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x_digits = [int(c) for c in self.xs[i]]
        y_digits = [int(c) for c in str(self.ys[i])]
        sequence = x_digits + [EOS] + y_digits
        # The output at EOS predicts the first answer digit; the last answer digit predicts EOA.
        targets = [IGNORE] * len(x_digits) + y_digits + [EOA]
        inputs = F.one_hot(torch.tensor(sequence), VOCAB_SIZE).float()
        return inputs, torch.tensor(targets)


def pad_collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch of rows of different lengths: zero vectors for inputs, IGNORE for targets."""
    inputs = pad_sequence([row[0] for row in batch], batch_first=True)
    targets = pad_sequence([row[1] for row in batch], batch_first=True, padding_value=IGNORE)
    return inputs, targets


class TutorialModel(nn.Module):
    """One-hot inputs -> LSTM -> linear head."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.lstm = nn.LSTM(VOCAB_SIZE, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, N_OUTPUTS)

    def forward(self, inputs: torch.Tensor, state=None):
        outputs, state = self.lstm(inputs, state)
        return self.head(outputs), state


def make_loader(dataset: DigitSequenceDataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=pad_collate, generator=generator)


def make_optimizer(model: nn.Module, learning_rate: float = 3e-3) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=learning_rate)


def train_epoch(model: TutorialModel, loader: DataLoader, optimizer: torch.optim.Optimizer) -> float:
    """One pass over the training rows; returns the mean batch loss."""
    model.train()
    loss_func = nn.CrossEntropyLoss(ignore_index=IGNORE)
    total = 0.0
    for inputs, targets in loader:
        optimizer.zero_grad()
        logits, _ = model(inputs)
        loss = loss_func(logits.reshape(-1, N_OUTPUTS), targets.reshape(-1))
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(loader)


def validation_loss(model: TutorialModel, loader: DataLoader) -> float:
    """Mean teacher-forced loss over the validation batches."""
    model.eval()
    loss_func = nn.CrossEntropyLoss(ignore_index=IGNORE)
    total = 0.0
    with torch.no_grad():
        for inputs, targets in loader:
            logits, _ = model(inputs)
            total += loss_func(logits.reshape(-1, N_OUTPUTS), targets.reshape(-1)).item()
    return total / len(loader)


def predict_one(model: TutorialModel, x: str) -> list[int]:
    """Greedy answer tokens for one digit string, stopping after EOA or at the length bound."""
    prompt = F.one_hot(torch.tensor([int(c) for c in x] + [EOS]), VOCAB_SIZE).float().unsqueeze(0)
    logits, state = model(prompt)
    answer = []
    for _ in range(max_answer_tokens(len(x))):
        token = logits[0, -1].argmax().item()
        answer.append(token)
        if token == EOA:
            break
        step = F.one_hot(torch.tensor([[token]]), VOCAB_SIZE).float()
        logits, state = model(step, state)
    return answer


def check_accuracy(model: TutorialModel, xs: list[str], ys: list[int]) -> float:
    """Exact match, one row at a time: the answer's digits followed by EOA."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in zip(xs, ys, strict=True):
            expected = [int(c) for c in str(int(y))] + [EOA]
            correct += predict_one(model, x) == expected
    return correct / len(xs)
