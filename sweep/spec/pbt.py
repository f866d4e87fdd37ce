"""``pbt:`` in a spec: population-based training's settings, and what a population may search.

PBT changes a member's hyperparameters as it trains, so only those the optimizer reads at each step
may be in ``space`` (`PBT_KEYS`): a shape key would need other weights, and the others are fixed
when the run starts. Each member is one trial (n_trials = population), its value its own; the
population selects its members itself, so there is no pruner, and one objective ranks them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from digitsum import config as cfg
from digitsum.config import Config
from digitsum.errors import shown
from sweep.spec.keys import PBTKeys, read_keys
from sweep.spec.model import Param, PBTRule, SpecError

PBT_KEYS = ("train.learning_rate", "train.weight_decay", "train.grad_clip")  # read by the optimizer every step


def parse_pbt(
    given: Any,
    n_trials: int,
    space: tuple[Param, ...],
    base: Config,
    pruner: dict[str, Any],
    several_objectives: bool,
    fail: Callable[[str, str], SpecError],
) -> PBTRule | None:
    """The spec's ``pbt:`` checked against the rest of the spec; None without one."""
    if given is None:
        return None
    if not isinstance(given, dict):
        raise fail("pbt", f"{shown(given)}: expected {{population: 8, interval: 4}}")
    values = read_keys(PBTKeys, given, "pbt.", fail)
    for required, example in (("population", "8"), ("interval", "4")):
        if values.get(required) is None:
            raise fail(f"pbt.{required}", f"required, e.g. {required}: {example}")
    rule = PBTRule(**values)
    if n_trials != rule.population:
        raise fail("n_trials", f"{n_trials}: a pbt study has one trial per member; set n_trials: {rule.population}")
    for param in space:
        _check_param(param, fail)
    if pruner.get("type", "none") != "none":
        raise fail("pruner", "a pbt population selects its members itself; set pruner: none")
    if several_objectives:
        raise fail("pbt", "ranks members by one objective; give metric: (not objectives:)")
    if base.train.n_seeds != 1:
        raise fail("fixed.train.n_seeds", "a pbt member is one model; leave train.n_seeds at 1")
    if rule.interval >= base.train.n_epochs:
        raise fail(
            "pbt.interval",
            f"{rule.interval}: give fewer than train.n_epochs ({base.train.n_epochs}) epochs, or none is exploited",
        )
    return rule


def _check_param(param: Param, fail: Callable[[str, str], SpecError]) -> None:
    where = f"space.{param.key}"
    if param.key not in PBT_KEYS:
        member = param.key in cfg.schema() and cfg.schema()[param.key].member
        why = "is fixed when training starts" if member else "changes the weights' shape or the batch plan"
        raise fail(where, f"pbt cannot change it as members train: it {why}; pbt may search {', '.join(PBT_KEYS)}")
    if param.choices is not None or param.when:
        raise fail(where, "pbt perturbs a range: give low and high (and log), not choices or when")
