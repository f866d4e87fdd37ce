"""PBT against TPE with `stack` and against today's recipe, at equal compute, on the counter's hard
objective: in-range exact match on unseen 10-digit inputs, trained on lengths 1-4.

    .venv/bin/python bench/bench_pbt.py [--seeds 1,2,3] [--quick]

Each method spends 8 members x 30 epochs, the architecture and loss of studies/recipes/counter-robust.yaml:
- PBT: studies/counter-pbt.yaml (8 members, exploit and explore every 5 epochs over the learning rate and
  weight decay), its sampler, pbt and training seeds set to the search seed;
- TPE with stack: the same spec without `pbt:`, as 8 trials by TPE (4 random first), 4 at once
  (`--stack 4`), no pruner, so every trial trains its 30 epochs;
- the recipe: counter-robust.yaml on 8 training seeds (train.n_seeds: 8), the best seed by the same
  probe standing for the search's best trial.

Each search runs once per search seed, on a fresh storage. The table gives, per method, the search's
best value (its best member on the objective's 5,000 probe strings, the figure `sweep best` shows), the
median member, and that best member scored again on 5,000 other 10-digit strings (drawn with another
seed), where selecting on the probe no longer flatters it. Then mean +- sd and the worst over search seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SWEEP = str(Path(sys.executable).with_name("sweep"))
FRESH_SEED = 4321  # the other strings; the objective's probe uses digitsum.lengths.PROBE_SEED


def specs(seed: int, epochs: int) -> dict[str, dict]:
    pbt = yaml.safe_load((ROOT / "studies" / "counter-pbt.yaml").read_text())
    pbt["fixed"].update({"train.seed": seed, "train.n_epochs": epochs})
    pbt["sampler"] = {"type": "random", "seed": seed}
    pbt["pbt"]["seed"] = seed
    pbt["pbt"]["interval"] = min(pbt["pbt"]["interval"], epochs - 1)  # --quick's 2 epochs
    tpe = {key: value for key, value in pbt.items() if key != "pbt"}
    tpe.update(name="counter-tpe", sampler={"type": "tpe", "seed": seed, "n_startup_trials": 4}, stack=4)
    return {"pbt": pbt, "tpe": tpe}


def search(folder: Path, spec: dict, fresh_csv: Path) -> dict:
    """Run a study spec on a fresh storage; its members' values and its best trial on the fresh strings."""
    from sweep import api

    folder.mkdir()
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    storage, artifacts = f"sqlite:///{folder}/{spec['name']}.db", str(folder / spec["name"])
    start = time.perf_counter()
    subprocess.run(
        [SWEEP, "run", str(path), "--storage", storage, "--artifacts", artifacts], check=True, stdout=subprocess.DEVNULL
    )
    seconds = time.perf_counter() - start
    best = api.best(spec["name"], storage)
    values = _values(spec["name"], storage)
    fresh = api.evaluate(f"{spec['name']}:{best['trial']}", fresh_csv, "cpu", storage, artifacts)
    return {"best": best["value"], "values": values, "fresh": _in_range(fresh.accuracy), "seconds": seconds}


def _values(name: str, storage: str) -> list[float]:
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    return [t.value for t in study.trials if t.value is not None]


def recipe(folder: Path, seed: int, epochs: int, probe_csv: Path, fresh_csv: Path) -> dict:
    """counter-robust.yaml on 8 seeds at once; the best seed by the probe, scored on the fresh strings."""
    from sweep import api

    overrides = [f"train.seed={seed * 100}", "train.n_seeds=8", f"train.n_epochs={epochs}",
                 f"train.log_path={folder}", f"train.run_name=recipe-{seed}", "train.num_threads=0"]  # fmt: skip
    start = time.perf_counter()
    command = [SWEEP, "train", "--config", str(ROOT / "studies/recipes/counter-robust.yaml"), *overrides]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    run_dir = folder / f"recipe-{seed}"
    probe = [_in_range(a) for a in api.evaluate_seeds(run_dir, probe_csv, "cpu").accuracies]
    fresh = [_in_range(a) for a in api.evaluate_seeds(run_dir, fresh_csv, "cpu").accuracies]
    chosen = max(range(len(probe)), key=lambda i: (probe[i], -i))
    return {"best": probe[chosen], "values": probe, "fresh": fresh[chosen], "seconds": seconds}


def _in_range(accuracy: object) -> float:
    in_range = getattr(accuracy, "in_range", None)
    assert in_range is not None, "the checkpoint's training rows could not be rebuilt"
    return float(in_range.exact_match)


def write_probes(folder: Path) -> tuple[Path, Path]:
    """The objective's probe (10 digits, 5,000 strings, PROBE_SEED) and 5,000 other 10-digit strings."""
    from digitsum.data import make_rows, write_csv
    from digitsum.datasets import probe_rows
    from digitsum.lengths import Probe

    probe, fresh = folder / "probe10.csv", folder / "fresh10.csv"
    rows = probe_rows(Probe((10,), 5000))
    assert rows is not None
    write_csv(rows, probe)
    write_csv(make_rows([10], sample=5000, seed=FRESH_SEED), fresh)
    return probe, fresh


def summary(results: list[dict], key: str) -> str:
    values = [r[key] for r in results]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):7.2%} +- {spread:5.2%} (worst {min(values):6.2%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3", help="search seeds, comma-separated")
    parser.add_argument("--quick", action="store_true", help="2 epochs, one search seed: check that it runs")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    seeds = [1] if args.quick else [int(s) for s in args.seeds.split(",")]
    epochs = 2 if args.quick else 30
    results: dict[str, list[dict]] = {"pbt": [], "tpe": [], "recipe": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        probe_csv, fresh_csv = write_probes(folder)
        for seed in seeds:
            for method, spec in specs(seed, epochs).items():
                results[method].append(search(folder / f"{method}-{seed}", spec, fresh_csv))
            results["recipe"].append(recipe(folder, seed, epochs, probe_csv, fresh_csv))
            for method, runs in results.items():
                r = runs[-1]
                median = statistics.median(r["values"])
                print(f"seed {seed} {method:6s}: best {r['best']:.2%}, median member {median:.2%}, "
                      f"best on fresh strings {r['fresh']:.2%}, {r['seconds']:.0f} s", flush=True)  # fmt: skip
    titles = {"pbt": "PBT (counter-pbt.yaml)", "tpe": "TPE, --stack 4", "recipe": "counter-robust.yaml, 8 seeds"}
    print(f"\n8 members x {epochs} epochs each; {len(seeds)} search seed(s) ({args.seeds if not args.quick else 1})")
    print(f"{'method':30s} {'best value (probe)':>34s} {'best member, fresh strings':>34s} {'wall s':>7s}")
    for method, runs in results.items():
        wall = statistics.mean(r["seconds"] for r in runs)
        print(f"{titles[method]:30s} {summary(runs, 'best'):>34s} {summary(runs, 'fresh'):>34s} {wall:7.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
