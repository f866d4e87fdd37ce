"""The quickstart's search under Ray Tune 2.x: `OptunaSearch` (the quickstart's TPE settings) picks the
trials and ASHA stops the poor ones, training `plain_optuna.train` (the same script's model, data and
scoring), one trial per CPU.

    python bench/peers/ray_tune.py TRAIN_CSV VAL_CSV [--trials 10] [--epochs 15] [--cpus 2]

Ray runs on this machine alone, on 127.0.0.1 (no dashboard, no usage reporting). Its last line is
JSON: {"trials", "complete", "pruned", "best"}, where "pruned" counts trials ASHA stopped early.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def space(trial: Any) -> None:
    """The define-by-run space: the plain script's own `suggest` (module level: Ray pickles it)."""
    from plain_optuna import suggest

    suggest(trial)


def main() -> None:
    sys.path.insert(0, str(HERE))
    from plain_optuna import arguments, load, train

    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])  # for Ray's workers

    import optuna
    import ray
    import torch
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    def trainable(config: dict[str, Any], data: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        train(config, data, args.epochs, lambda epoch, accuracy: tune.report({"val_exact_match": accuracy}) or False)

    ray.init(num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, data=load(args.train_csv, args.val_csv)), {"cpu": 1}),
            tune_config=tune.TuneConfig(
                search_alg=OptunaSearch(
                    space,
                    metric="val_exact_match",
                    mode="max",
                    sampler=optuna.samplers.TPESampler(seed=42, n_startup_trials=4),
                ),
                scheduler=ASHAScheduler(
                    metric="val_exact_match",
                    mode="max",
                    max_t=args.epochs,
                    grace_period=min(5, args.epochs),
                    reduction_factor=2,
                ),
                num_samples=args.trials,
            ),
            run_config=tune.RunConfig(storage_path=storage, name="quickstart", verbose=0),
        )
        results = tuner.fit()
        best = results.get_best_result("val_exact_match", "max", scope="all").metrics_dataframe["val_exact_match"].max()
        epochs = [len(r.metrics_dataframe) for r in results if r.metrics_dataframe is not None]
    ray.shutdown()
    complete = sum(n == args.epochs for n in epochs)
    print(json.dumps({"trials": len(results), "complete": complete, "pruned": len(results) - complete, "best": best}))


if __name__ == "__main__":
    main()
