"""The `sweep` command line: `app` (its error boundary in `sweep.cli.app`) and one module per command
group, in the pipeline's order. Each command parses, calls `sweep.api` or the core, and prints."""

from sweep.cli import core, launch, report, reruns, run, study  # each adds its commands to the app
from sweep.cli.app import app, main

__all__ = ["app", "core", "launch", "main", "report", "reruns", "run", "study"]
