"""A training run's folder, the tutorial's train.py: `train_run` trains a config's members and writes
``<log_path>/<run_name>/``. Its layout is decided here alone:

    config.json                 the run's config (with train.n_seeds K)
    history.csv, best.pt        one model (K = 1): a line per epoch, the best epoch's checkpoint
    events.out.tfevents.*       and its TensorBoard event files
    seed-S/history.csv, ...     K > 1: each seed S's, as one model's run folder (its checkpoint's
                                config says train.seed=S, n_seeds=1)

`config.json` is written first, and every member's history line and best checkpoint at every epoch,
so a run stopped at any epoch shows how far each member got and keeps its best model.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Collection
from pathlib import Path

import numpy as np

from digitsum.config import Config, TrainConfig, flatten
from digitsum.data import Rows
from digitsum.datasets import load_rows, probe_rows
from digitsum.errors import ConfigError, UsageError
from digitsum.lengths import Probe, lengths_text
from digitsum.members import config_seeds, seed_members
from digitsum.tensorboard import recording
from digitsum.train import EpochResult, Exploit, FitResult, OnEpoch, fit

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_exact_match", "seconds", "train_seconds", "learning_rate")
SEED_FOLDER = "seed-"


def history_row(result: EpochResult) -> str:
    """One line of history.csv."""
    return ",".join(f"{getattr(result, c):.6g}" if c != "epoch" else str(result.epoch) for c in HISTORY_COLUMNS) + "\n"


def run_folder(config: Config) -> Path:
    return Path(config.train.log_path) / config.train.run_name


def member_folders(config: Config) -> list[Path]:
    """Where each of a run's members (its seeds) keeps its history, checkpoint and event files: the run
    folder for one model, seed-S/ for each of several."""
    run_dir, seeds = run_folder(config), config_seeds(config.train)
    return [run_dir] if len(seeds) == 1 else [run_dir / f"{SEED_FOLDER}{seed}" for seed in seeds]


def seed_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """A run folder's seed-S/best.pt, by seed: what a train.n_seeds run leaves."""
    found = [(int(p.parent.name.removeprefix(SEED_FOLDER)), p) for p in run_dir.glob(f"{SEED_FOLDER}*/best.pt")]
    return sorted(p for p in found if p[1].parent.name.removeprefix(SEED_FOLDER).isdigit())


def free_folder(folder: Path) -> Path:
    """``folder``, or folder-2, -3, ... where it holds an earlier run."""
    number, free = 2, folder
    while free.exists() and any(free.iterdir()):
        free, number = folder.with_name(f"{folder.name}-{number}"), number + 1
    return free


def place_run(config: Config, named: bool, overwrite: bool) -> tuple[Config, Path | None]:
    """Never write over an earlier run unasked: an unnamed run takes the next free name (run-2, ...);
    a named one that exists is refused unless ``overwrite``. The config, and where it moved to."""
    from digitsum.config import apply

    folder = run_folder(config)
    if not folder.is_dir() or not any(folder.iterdir()) or overwrite:
        return config, None
    if named:
        raise UsageError(
            f"{folder} holds an earlier run; pick another train.run_name, or add --overwrite to replace it"
        )
    free = free_folder(folder)
    return apply(config, {"train.run_name": free.name}), free


def train_run(
    config: Config,
    on_epoch: OnEpoch | None = None,
    tensorboard: bool = False,
    probe: Probe | None = None,
    stop: threading.Event | None = None,
) -> tuple[list[FitResult], Path]:
    """Fit a config's members (its ``train.n_seeds`` seeds, at once) and write its run folder; each
    member's FitResult, in seed order. ``probe``'s lengths, unseen in training, are scored every epoch;
    with ``tensorboard``, TensorBoard's event files too, where the package is installed. ``stop`` set
    ends the training before its next step (`digitsum.train.Interrupted`), each member's best kept."""
    probed = unseen_probe(config.train, probe or Probe())
    members = seed_members(config)
    run_dir = run_folder(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    folders = member_folders(config)
    for folder in folders:
        folder.mkdir(exist_ok=True)
        (folder / "history.csv").write_text(",".join(HISTORY_COLUMNS) + "\n")
        for stale in folder.glob("events.out.tfevents.*"):  # an overwritten run's curves are not this run's
            stale.unlink()
    with contextlib.ExitStack() as stack:
        events = [
            stack.enter_context(recording(folder if tensorboard else None, flatten(m.config.to_dict())))
            for folder, m in zip(folders, members, strict=True)
        ]
        checkpoints = [folder / "best.pt" for folder in folders]
        results = fit(members, _recorder(folders, on_epoch), probed, events, checkpoints, stop=stop)
    return results, run_dir


def _recorder(folders: list[Path], on_epoch: OnEpoch | None) -> OnEpoch:
    """Each member's history line, written as its epoch ends, then ``on_epoch``."""

    def record(results: list[EpochResult]) -> bool | Collection[int] | Exploit | None:
        for result in results:
            with (folders[result.member] / "history.csv").open("a") as handle:
                handle.write(history_row(result))
        return on_epoch(results) if on_epoch is not None else None

    return record


def unseen_probe(train: TrainConfig, probe: Probe) -> Rows | None:
    """The probe's rows (None: no probe lengths); ConfigError where a probe length is trained on."""
    trained = sorted(set(np.unique(load_rows(train).lengths).tolist()) & set(probe.lengths))
    if trained:
        raise ConfigError(f"probe length(s) {lengths_text(trained)} are trained on: a probe takes unseen lengths")
    return probe_rows(probe, train)
