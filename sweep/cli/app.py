"""The `sweep` app and its one error boundary.

Every expected mistake (bad key, bad file, bad spec, unknown study, bad storage URL) ends as one
line on stderr and exit code 2; a run that stops (`RunFailed`) or an OS error (a full disk) as one
line and exit code 1; no traceback. The commands live in one module per group (`sweep.cli.core`,
`run`, `study`, `reruns`, `report`, `launch`); each parses, calls `sweep.api` or the core, and prints.
"""

from __future__ import annotations

import sys
import warnings
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from digitsum.errors import UsageError, warning_line
from sweep.cli.output import say_error

# The command groups in the pipeline's order: `sweep --help` lists their commands so.
GROUPS = (
    "sweep.cli.core",
    "sweep.cli.run",
    "sweep.cli.study",
    "sweep.cli.reruns",
    "sweep.cli.report",
    "sweep.cli.launch",
)


class _ErrorBoundary(TyperGroup):
    """Runs every command: errors a user can fix become one line on stderr and exit code 2."""

    def list_commands(self, ctx: Any) -> list[str]:
        def group(name: str) -> int:
            callback = self.commands[name].callback
            return GROUPS.index(callback.__module__) if callback and callback.__module__ in GROUPS else len(GROUPS)

        return sorted(super().list_commands(ctx), key=group)  # stable: each group's own order stays

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except TyperException as error:  # a bad option before the command, e.g. `sweep --bogus`
            raise _usage_line(error) from None

    def invoke(self, ctx: Any) -> Any:
        shown_as = warnings.showwarning  # only how warnings show: the filters stay as modules set them
        warnings.showwarning = _warning_line
        try:
            return super().invoke(ctx)
        except TyperException as error:  # typer's own usage errors: a bad option value, a missing argument
            raise _usage_line(error) from None
        except UsageError as error:
            say_error(str(error))
            raise typer.Exit(2) from None
        except _run_failed() as error:  # a worker or the storage failed mid-run, a loss gone NaN: one line
            say_error(str(error))
            raise typer.Exit(1) from None
        except BrokenPipeError:  # `sweep ls | head`: the reader has all it wanted
            _silence_stdout()
            raise typer.Exit(0) from None
        except OSError as error:  # disk full, permission denied: not a usage error, still no traceback
            say_error(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "))
            raise typer.Exit(1) from None
        finally:
            warnings.showwarning = shown_as


class _NeverRaised(Exception):
    pass


def _run_failed() -> tuple[type[Exception], ...]:
    """`sweep.run.failures.RunFailed` and `digitsum.train.TrainingDiverged`, once a command has loaded them
    (none is raised before): the boundary imports neither, so `sweep --help` loads neither torch nor optuna."""
    wanted = (("sweep.run.failures", "RunFailed"), ("digitsum.train", "TrainingDiverged"))
    loaded = [getattr(sys.modules[module], name) for module, name in wanted if module in sys.modules]
    return tuple(loaded) or (_NeverRaised,)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail on the closed pipe."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _warning_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    typer.echo(warning_line(message, category), err=True)


def _usage_line(error: TyperException) -> BaseException:
    """Typer's usage error as one line and exit code 2 (help for no arguments stays help)."""
    if error.exit_code != 2 or type(error).__name__ == "NoArgsIsHelpError":
        return error
    path = getattr(getattr(error, "ctx", None), "command_path", None) or "sweep"
    command = " ".join(["sweep", *path.split()[1:]])  # the console script's name, however it was invoked
    say_error(f"{error.format_message().rstrip('.')}; see {command} --help")
    return typer.Exit(2)


app = typer.Typer(
    cls=_ErrorBoundary,
    help="Train, sweep and compare RNN, LSTM and GRU models on the digit-sum task.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"sweep (digitsum-sweep) {version('digitsum-sweep')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train, sweep and compare RNN, LSTM and GRU models on the digit-sum task.

    Example: sweep run studies/quickstart.yaml && sweep report quickstart
    """


def main() -> None:
    app()
