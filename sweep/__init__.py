"""The Optuna layer: study specs, storage, the objective, workers, reports and the `sweep` CLI.

Imports nothing itself, so `sweep --help` loads neither optuna nor torch.
"""
