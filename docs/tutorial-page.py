"""Run every command of docs/tutorial.md and write what each printed under it, so the page cannot go stale.

    .venv/bin/python docs/tutorial-page.py                 # rewrite the page's outputs (2-3 minutes on 2 cores)
    .venv/bin/python docs/tutorial-page.py --pictures      # also the report's picture (headless Chromium)
    .venv/bin/python docs/tutorial-page.py --check         # exit 1 if an output no longer has the page's shape,
                                                           # or a file written is not in .gitignore

A command is a line starting with `$ ` inside a ```console block; everything up to the next command is its
output. The commands run in order, as a user would from the repository's root, in a fresh folder holding a
copy of `studies/` (so the study starts empty and `studies/sweep.db` is its storage), with `.venv/bin` first
on PATH. `$DB` is a PostgreSQL URL (`--postgres URL`, or $TUTORIAL_POSTGRES); the test gives one from its
own server. Without one, the PostgreSQL commands are left as they are (and `--check` fails).

`--check` compares shapes, not figures: digits, model types and trial states are masked on both sides,
because another CPU rounds floats differently and the same seeds then take other turns.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sweep.run.plan import available_cores

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "tutorial.md"
PICTURE = REPO / "docs" / "images" / "tutorial-report.png"
SHOWN_HOME = "/home/you/digitsum-sweep"  # the scratch folder, as the page shows it
SHOWN_DB = "db-host:5432"
SERVERS = ("sweep dashboard",)  # commands that serve until Ctrl-C: started, read, then stopped
LONG = 24  # an output longer than this shows its first and last lines, the middle cut (a training run's epochs)
HEAD, TAIL = 5, 6
BLOCK = re.compile(r"^```console\n(.*?)^```\n", re.S | re.M)
TIMING = re.compile(r"^_The commands above took .*_$", re.M)


@dataclass
class Command:
    line: str  # as the page shows it, without "$ "
    output: str  # as the page shows it


def commands(block: str) -> list[Command]:
    found: list[Command] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            found.append(Command(line[2:], ""))
        elif found:
            found[-1].output += line + "\n"
    return found


def environment(bin_dir: Path, db: str | None) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", COLUMNS="100", NO_COLOR="1")
    env.pop("SWEEP_STORAGE", None)
    env.pop("SWEEP_ARTIFACTS", None)
    if db:
        env["DB"] = db
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command: str, cwd: Path, env: dict[str, str]) -> str:
    if command.startswith(SERVERS):
        return serve(command, cwd, env)
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"`{command}` exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def hears_ctrl_c() -> None:
    """A job started with `&` by a shell ignores SIGINT, and so would the server it starts: undo that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def serve(command: str, cwd: Path, env: dict[str, str]) -> str:
    """Start a server, read its lines until it listens, stop it as Ctrl-C would; on a free port, shown as asked."""
    port = free_port()
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command} --port {port}"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=hears_ctrl_c,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Hit Ctrl-C"):
            break
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit(f"`{command}` did not stop on Ctrl-C within 30 s:\n{''.join(lines)}") from None
    if not any(line.startswith("Listening on") for line in lines):
        raise SystemExit(f"`{command}` did not start:\n{''.join(lines)}")
    return "".join(lines).replace(f":{port}/", ":8080/")


def shown(output: str, home: Path, db: str | None) -> str:
    """The output as the page shows it: the scratch folder as a checkout's, the server as a db host's."""
    output = output.replace(str(home), SHOWN_HOME)
    if db:
        output = output.replace(urlsplit(db).netloc.split("@")[-1], SHOWN_DB)
    lines = [line.rstrip() for line in output.splitlines()]
    if len(lines) > LONG:
        lines = [*lines[:HEAD], f"... ({len(lines) - HEAD - TAIL} lines)", *lines[-TAIL:]]
    return "\n".join(lines) + "\n"


def mask(text: str) -> list[str]:
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "ID", text)
    text = re.sub(r"\b(rnn|lstm|gru|lrnn)\b", "CELL", text)
    text = re.sub(r"\b(COMPLETE|PRUNED|FAIL)\b", "STATE", text)
    text = re.sub(r"\d[\d,.]*", "9", text)
    return [re.sub(r"\s+", " ", line).strip() for line in text.splitlines() if line.strip()]


def fill(page: str, db: str | None, pictures: bool) -> tuple[str, list[str], list[str], float]:
    """The page with fresh outputs; the commands whose output changed shape; what could not be done (a
    command not run here, a file left untracked); and the seconds the commands took."""
    bin_dir = Path(sys.executable).parent
    changed: list[str] = []
    problems: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="digitsum-tutorial-") as scratch:
        home = Path(scratch).resolve() / "digitsum-sweep"
        shutil.copytree(REPO / "studies", home / "studies", ignore=shutil.ignore_patterns("*.db*", "artifacts"))
        env = environment(bin_dir, db)

        def block(match: re.Match[str]) -> str:
            text = ""
            for command in commands(match.group(1)):
                if "$DB" in command.line and not db:
                    problems.append(f"{command.line}: not run, no PostgreSQL given (--postgres URL)")
                    text += f"$ {command.line}\n{command.output}"
                    continue
                took = time.monotonic()
                output = shown(run(command.line, home, env), home, db)
                print(f"{time.monotonic() - took:6.1f}s  {command.line}", file=sys.stderr)
                if mask(output) != mask(command.output):
                    changed.append(command.line)
                text += f"$ {command.line}\n{output}"
            return f"```console\n{text}```\n"

        page = BLOCK.sub(block, page)
        problems += [f"{path}: left untracked; add it to .gitignore" for path in untracked(home)]
        if pictures:
            picture(home / "reports" / "quickstart.html")
    return page, changed, problems, time.monotonic() - started


def untracked(home: Path) -> list[str]:
    """What the commands wrote that `git status` in a checkout would list: the page must leave a clean tree."""
    copied = {p.relative_to(REPO).as_posix() for p in (REPO / "studies").rglob("*")}
    written = sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())
    written = [path for path in written if path not in copied]
    ignored = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--no-index", "--stdin"],
        input="\n".join(written), capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    return sorted(set(written) - set(ignored))


def picture(report: Path) -> None:
    """The top of the quickstart's report, as Chromium draws it."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    flags = "--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update"
    subprocess.run(
        [chromium, *flags.split(), "--no-first-run", "--hide-scrollbars", "--window-size=1200,1500",
         "--virtual-time-budget=15000", f"--screenshot={PICTURE}", report.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare shapes only; write nothing")
    parser.add_argument("--pictures", action="store_true", help="also redraw docs/images/tutorial-report.png")
    parser.add_argument("--postgres", default=os.environ.get("TUTORIAL_POSTGRES"), help="a PostgreSQL URL for $DB")
    args = parser.parse_args()
    page, changed, problems, seconds = fill(PAGE.read_text(encoding="utf-8"), args.postgres, args.pictures)
    cores = available_cores()
    day = datetime.date.today().isoformat()
    timing = f"_The commands above took {seconds / 60:.1f} minutes in all on {cores} cores ({day}, one run)._"
    page = TIMING.sub(timing, page)
    print(f"the commands took {seconds:.0f} s on {cores} cores", file=sys.stderr)
    if not args.check:
        PAGE.write_text(page, encoding="utf-8")
        print(f"wrote {PAGE}")
    failed = problems + (
        [f"{line}: its output no longer has the page's shape" for line in changed] if args.check else []
    )
    if failed:
        raise SystemExit("\n".join(failed))
    if args.check:
        print("every output has the page's shape")


if __name__ == "__main__":
    main()
