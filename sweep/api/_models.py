"""The tutorial's scripts from Python: train one model (or its seeds at once), evaluate a checkpoint on a
CSV or along input lengths, load one and predict. Part of `sweep.api`, which re-exports every public
name here; like it, this module returns values, prints nothing, and imports nothing heavy itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from digitsum.evaluation import Evaluation, LengthCurve, SeedsEvaluation
    from digitsum.model import DigitSumModel
    from digitsum.train import EpochResult, FitResult


@dataclass(frozen=True)
class Trained:
    results: tuple[FitResult, ...]  # each member's: one model, or each of train.n_seeds seeds in seed order
    run_dir: Path
    moved_to: Path | None  # the run went to this free folder: its name was taken by an earlier run
    seeds: tuple[int, ...]  # each member's train.seed
    checkpoints: tuple[Path, ...]  # each member's best.pt

    @property
    def result(self) -> FitResult:
        """The first member's (the only one's, for one model)."""
        return self.results[0]


def train(
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    on_epoch: Callable[[list[EpochResult]], None] | None = None,
    on_start: Callable[[Any, Path | None], None] | None = None,
    tensorboard: bool = True,
    probe: str | None = None,
    stop: threading.Event | None = None,
) -> Trained:
    """Train like `sweep train`: a YAML/JSON file of config keys, then KEY=VALUE overrides; with
    ``train.n_seeds`` K, its K seeds at once. ``on_start`` hears the config and, where the run's folder
    held an earlier run, that folder; ``on_epoch`` each epoch's results, one per seed. ``tensorboard``:
    TensorBoard event files in the run folder too, where the optional package is installed
    (`digitsum.tensorboard.missing()` says why not, in one line). ``probe``: input lengths never
    trained on (``"5"``, ``"5-6"``), scored every epoch. ``stop`` set (a signal's handler sets it) ends
    the training before its next step with `digitsum.train.Interrupted`; each seed's best so far is kept."""
    from digitsum import config as cfg
    from digitsum.errors import DataError
    from digitsum.lengths import Probe, parse_lengths
    from digitsum.members import config_seeds
    from digitsum.runs import member_folders, place_run, run_folder, train_run

    try:  # a bad probe is named before any work
        probed = Probe(tuple(parse_lengths(probe))) if probe else None
    except DataError as error:
        raise DataError(f"probe {error}") from None

    values = _config_file_values(Path(config_file)) if config_file else {}
    given = cfg.parse_overrides(overrides or [])
    config = cfg.apply(cfg.from_dict(values), given)
    named = "train.run_name" in {**cfg.flatten(values), **given}
    taken = run_folder(config)
    config, moved_to = place_run(config, named, overwrite)
    if on_start is not None:
        on_start(config, taken if moved_to else None)
    results, run_dir = train_run(config, on_epoch, tensorboard, probed, stop)
    checkpoints = tuple(folder / "best.pt" for folder in member_folders(config))
    return Trained(tuple(results), run_dir, moved_to, tuple(config_seeds(config.train)), checkpoints)


def _config_file_values(path: Path) -> dict[str, Any]:
    from digitsum.errors import ConfigError
    from digitsum.files import require_file
    from sweep.spec.reading import read_yaml

    require_file(
        path, "config file", "give a YAML or JSON file of config keys, like {model: {hidden_size: 64}}", ConfigError
    )
    values = read_yaml(path, ConfigError) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, like {{model: {{hidden_size: 64}}}}")
    return values


def evaluate(
    checkpoint: str | Path,
    data_csv: str | Path,
    device: str | torch.device = "auto",
    storage: str | None = None,
    artifacts: str | None = None,
) -> Evaluation:
    """Unrolled exact-match accuracy of a checkpoint (a file, or ``STUDY:TRIAL``) on a CSV, overall, per
    length and in range."""
    from digitsum.checkpoint import load_checkpoint
    from digitsum.data import read_csv
    from digitsum.evaluation import evaluate_model
    from sweep.report.best import trial_checkpoint

    rows = read_csv(Path(data_csv))
    with trial_checkpoint(str(checkpoint), storage, artifacts) as path:
        model, payload = load_checkpoint(path, _device(device))
    return evaluate_model(model, payload["config"], rows)


def evaluate_seeds(run_dir: str | Path, data_csv: str | Path, device: str | torch.device = "auto") -> SeedsEvaluation:
    """Every seed of a `train.n_seeds` run folder on one CSV, scored at once (models of one shape)."""
    from digitsum.data import read_csv
    from digitsum.evaluation import evaluate_run

    return evaluate_run(Path(run_dir), read_csv(Path(data_csv)), _device(device))


def length_curve(
    checkpoint: str | Path,
    lengths: str | None = None,
    sample: int | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    storage: str | None = None,
    artifacts: str | None = None,
) -> LengthCurve:
    """In-range exact match against input length (`sweep evaluate --lengths`) of a checkpoint (a file,
    ``STUDY:TRIAL``) or of every seed of a `train.n_seeds` run folder: ``sample`` strings per length
    (default 5,000), drawn (seeded) uniformly among those whose digit sum occurs in the training rows;
    ``lengths`` default to 5,10,20,50,100."""
    from digitsum.evaluation import length_curve as curve
    from digitsum.evaluation import load_models
    from digitsum.lengths import CURVE_LENGTHS, IN_RANGE_SAMPLE, parse_lengths
    from sweep.report.best import trial_checkpoint

    # bad lengths are named before any checkpoint is read
    wanted = tuple(parse_lengths(lengths)) if lengths is not None else CURVE_LENGTHS
    with trial_checkpoint(str(checkpoint), storage, artifacts) as path:
        loaded = load_models(Path(path), _device(device))
    return curve(loaded, wanted, sample or IN_RANGE_SAMPLE, seed)


def load_model(
    checkpoint: str | Path, device: str | torch.device = "cpu", storage: str | None = None, artifacts: str | None = None
) -> DigitSumModel:
    """A checkpoint's model, ready to predict (in eval mode): a file, or ``STUDY:TRIAL`` (``STUDY:best``)
    fetched from the study's artifact store."""
    from digitsum.checkpoint import load_checkpoint
    from sweep.report.best import trial_checkpoint

    where = _device(device)
    with trial_checkpoint(str(checkpoint), storage, artifacts) as path:
        model, _ = load_checkpoint(path, where)
    return model


def predict(model: DigitSumModel, sequences: list[str]) -> list[str | None]:
    """Each digit string's decoded answer (greedy, token by token); None where it wrote no answer."""
    from digitsum.data import encode_prompts
    from digitsum.decode import answers_to_text, greedy_decode

    return answers_to_text(greedy_decode(model, encode_prompts(sequences)))


def answers(
    checkpoint: str | Path,
    sequences: list[str],
    device: str | torch.device = "auto",
    storage: str | None = None,
    artifacts: str | None = None,
) -> list[dict[str, Any]]:
    """Each sequence's decoded answer beside its digit sum, as `sweep predict --json` prints them."""
    from digitsum.data import encode_prompts
    from digitsum.decode import answers_to_text, greedy_decode

    prompts = encode_prompts(sequences)  # bad sequences are refused before the checkpoint is read
    decoded = answers_to_text(greedy_decode(load_model(checkpoint, device, storage, artifacts), prompts))
    rows = []
    for sequence, answer in zip(sequences, decoded, strict=True):
        expected = str(sum(map(int, sequence)))
        rows.append({"sequence": sequence, "answer": answer, "expected": expected, "correct": answer == expected})
    return rows


def _device(device: str | torch.device) -> torch.device:
    """A device as given (the CLI resolves ``--device`` itself, for its messages), or resolved by name."""
    import torch

    from digitsum.device import resolve_device

    return device if isinstance(device, torch.device) else resolve_device(device, "device")
