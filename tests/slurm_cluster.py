"""A real one-node Slurm cluster for the tests: munged, slurmctld and slurmd from Debian's packages,
started on this machine with a generated slurm.conf in a temporary folder, on free loopback ports,
and shut down at the end (even when a test fails). Where it cannot start, `why_unavailable` says why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "scontrol")


def _daemon(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}",) if os.access(p, os.X_OK)), None)


def why_unavailable() -> str | None:
    """Why Slurm cannot run here (None: it can)."""
    missing = [name for name in DAEMONS if _daemon(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed (tests/system-deps.sh installs slurm-wlm and munge as root)"
    if os.geteuid() != 0:
        return "slurmd runs jobs as their user and must start as root; run the tests as root"
    return None


@dataclasses.dataclass(frozen=True)
class Cluster:
    folder: Path
    env: dict[str, str]  # SLURM_CONF, for sbatch, squeue and scancel
    started_in: float  # seconds from starting munged to the node taking jobs

    def run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), env=self.env, capture_output=True, text=True, timeout=timeout)

    def queued(self, job_id: str) -> list[str]:
        """The job's tasks still pending or running, as `squeue` lists them."""
        listed = self.run("squeue", "-h", "-j", job_id, "-o", "%i %T")
        return [line for line in listed.stdout.splitlines() if line.strip()]

    def wait_until_done(self, job_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.queued(job_id):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still queued after {timeout:.0f} s: {self.queued(job_id)}")
            time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _conf(folder: Path, node: str, cpus: int) -> str:
    return f"""ClusterName=sweeptest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={folder}/munge.sock
CredType=cred/munge
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
InactiveLimit=0
KillWait=10
MinJobAge=10
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def slurm_cluster() -> Iterator[Cluster]:
    """munged, slurmctld and slurmd as a one-node cluster with this machine's CPUs; stopped at the end."""
    # a short folder: munge's socket path must fit in 108 bytes
    folder = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
    node = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = folder / "slurm.conf"
    conf.write_text(_conf(folder, node, cpus))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started = time.monotonic()
    try:
        _start(
            [_daemon("munged"), "--force", f"--socket={folder}/munge.sock", f"--key-file={key}",
             f"--log-file={folder}/munged.log", f"--pid-file={folder}/munged.pid", f"--seed-file={folder}/munge.seed"],
            env, folder / "munged.log",
        )  # fmt: skip
        _start([_daemon("slurmctld"), "-c", "-i"], env, folder / "slurmctld.log")
        _start([_daemon("slurmd"), "-N", node], env, folder / "slurmd.log")
        _wait_for_idle(env, folder)
        yield Cluster(folder, env, time.monotonic() - started)
    finally:
        _stop(folder, env)


def _start(command: list[str | None], env: dict[str, str], log: Path) -> None:
    done = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        said = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"{command[0]} did not start ({done.returncode}): {done.stderr}{done.stdout}\n{said}")


def _wait_for_idle(env: dict[str, str], folder: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=30)
        if states.stdout.strip() == "idle":
            return
        time.sleep(0.2)
    logs = "\n".join((folder / name).read_text()[-1500:] for name in ("slurmctld.log", "slurmd.log"))
    raise RuntimeError(f"the Slurm node did not become idle in {timeout:.0f} s:\n{logs}")


def _stop(folder: Path, env: dict[str, str]) -> None:
    """scontrol shutdown (slurmctld and slurmd), then every daemon by its pid file, then the folder."""
    with contextlib.suppress(Exception):
        subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True, timeout=20)
    for name in ("slurmd", "slurmctld", "munged"):
        pid_file = folder / f"{name}.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().split()[0])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                os.kill(pid, signal.SIGTERM)
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return state.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True
