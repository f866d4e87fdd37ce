"""The quickstart's search as a user would write it without this toolkit: one file in the style of
optuna-examples' `pytorch_simple.py` (a `define_model(trial)`, a `DataLoader`, `trial.report` and
`trial.should_prune` every epoch), over `torch.nn.LSTM` / `torch.nn.GRU`.

    python bench/peers/plain_optuna.py TRAIN_CSV VAL_CSV [--trials 10] [--epochs 15]

It reads the tutorial's headerless `x,y` CSVs, trains teacher-forced, and scores each epoch by greedy
(autoregressive) exact match on the validation rows, like `sweep run studies/quickstart.yaml`. Its
last line is JSON: {"trials", "complete", "pruned", "best"}. `bench/peers/ray_tune.py` runs the same
`train` under Ray Tune. This file imports nothing from the toolkit.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import optuna
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

EOS, EOA, PAD, IGNORE = 10, 11, 12, -100
N_INPUT, N_OUTPUT = 13, 12
SPACE = {  # studies/quickstart.yaml's space
    "model_type": ["lstm", "gru"],
    "hidden_size": (64, 192, 32),
    "learning_rate": (2.0e-3, 1.0e-2),
    "batch_size": [32, 64, 128],
}


def read_csv(path: str) -> tuple[list[str], list[str]]:
    xs, ys = [], []
    with open(path) as f:
        for line in f:
            x, y = line.strip().split(",")
            xs.append(x)
            ys.append(y)
    return xs, ys


def encode(xs: list[str], ys: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs `x EOS y` and targets `y EOA` at the answer's positions, padded to one width."""
    width = max(len(x) + len(y) + 1 for x, y in zip(xs, ys, strict=True))
    inputs = torch.full((len(xs), width), PAD)
    targets = torch.full((len(xs), width), IGNORE)
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        tokens = [int(c) for c in x] + [EOS] + [int(c) for c in y]
        inputs[i, : len(tokens)] = torch.tensor(tokens)
        targets[i, len(x) : len(x) + len(y) + 1] = torch.tensor([int(c) for c in y] + [EOA])
    return inputs, targets


class Model(nn.Module):
    def __init__(self, model_type: str, hidden_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(N_INPUT, 16)
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[model_type](16, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, N_OUTPUT)

    def forward(self, tokens: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        out, state = self.rnn(self.embed(tokens), state)
        return self.head(out), state


@torch.no_grad()
def exact_match(model: Model, xs: list[str], ys: list[str]) -> float:
    """Greedy decoding, batched by input length: the prompt in one pass, then one token a step."""
    model.eval()
    correct = 0
    for length in sorted({len(x) for x in xs}):
        rows = [i for i, x in enumerate(xs) if len(x) == length]
        prompt = torch.tensor([[int(c) for c in xs[i]] + [EOS] for i in rows])
        wanted = [[int(c) for c in ys[i]] + [EOA] for i in rows]
        logits, state = model(prompt)
        token = logits[:, -1].argmax(-1)
        out = [token]
        for _ in range(len(str(9 * length))):
            logits, state = model(token[:, None], state)
            token = logits[:, -1].argmax(-1)
            out.append(token)
        decoded = torch.stack(out, 1).tolist()
        correct += sum(d[: len(w)] == w for d, w in zip(decoded, wanted, strict=True))
    model.train()
    return correct / len(xs)


def train(
    params: dict[str, Any], data: dict[str, Any], epochs: int, report: Callable[[int, float], bool], seed: int = 0
) -> float:
    """Train one model; after each epoch `report(epoch, accuracy)`, which returns True to stop (prune)."""
    torch.manual_seed(seed)
    model = Model(params["model_type"], params["hidden_size"])
    loader = DataLoader(TensorDataset(*data["train"]), batch_size=params["batch_size"], shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["learning_rate"], weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(loader), eta_min=0.0)
    best = 0.0
    for epoch in range(epochs):
        for inputs, targets in loader:
            logits, _ = model(inputs)
            loss = F.cross_entropy(logits.reshape(-1, N_OUTPUT), targets.reshape(-1), ignore_index=IGNORE)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
        accuracy = exact_match(model, *data["val"])
        best = max(best, accuracy)
        if report(epoch, accuracy):
            break
    return best


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    low, high, step = SPACE["hidden_size"]
    return {
        "model_type": trial.suggest_categorical("model_type", SPACE["model_type"]),
        "hidden_size": trial.suggest_int("hidden_size", low, high, step=step),
        "learning_rate": trial.suggest_float("learning_rate", *SPACE["learning_rate"], log=True),
        "batch_size": trial.suggest_categorical("batch_size", SPACE["batch_size"]),
    }


def load(train_csv: str, val_csv: str) -> dict[str, Any]:
    return {"train": encode(*read_csv(train_csv)), "val": read_csv(val_csv)}


def arguments(description: str) -> argparse.ArgumentParser:
    """The search's arguments, which bench/peers/ray_tune.py takes too."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("train_csv")
    parser.add_argument("val_csv")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=15)
    return parser


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load(args.train_csv, args.val_csv)

    def objective(trial: optuna.Trial) -> float:
        def report(epoch: int, accuracy: float) -> bool:
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
            return False

        return train(suggest(trial), data, args.epochs, report)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",  # the quickstart's sampler and pruner
        sampler=optuna.samplers.TPESampler(seed=42, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=4),
    )
    study.optimize(objective, n_trials=args.trials)
    states = [t.state for t in study.trials]
    complete = states.count(optuna.trial.TrialState.COMPLETE)
    summary = {"trials": len(states), "complete": complete, "pruned": len(states) - complete}
    print(json.dumps({**summary, "best": study.best_value}))


if __name__ == "__main__":
    main()
