"""The Optuna layer: study specs, storage, the objective, workers, reports and the `sweep` CLI."""

import warnings

import optuna

# Heartbeats and RetryHeartbeatStaleTrialCallback are marked experimental since Optuna 2.8; we rely
# on them on purpose, so their warnings would only be noise on every command.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
