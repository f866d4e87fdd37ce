"""Many workers on one PostgreSQL storage (Optuna's distributed mode), with a worker killed mid-trial.

A real server: initdb + pg_ctl on a free loopback port with password authentication, stopped at
the end even when a test fails. Skipped with a reason where PostgreSQL cannot run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).parent))
from pg_server import postgres_server, why_unavailable
from sweep_helpers import kill_mid_trial

pytestmark = [pytest.mark.processes, pytest.mark.skipif(why_unavailable() is not None, reason=str(why_unavailable()))]

SWEEP = str(Path(sys.executable).with_name("sweep"))
SPEC = """
name: pg-kill
n_trials: 9
data: {lengths: [2, 3], val_fraction: 0.2}
fixed: {train.n_epochs: 16, train.seed: 0, model.hidden_size: 32}  # ~1 s trials: time to kill one mid-trial
sampler: {type: random, seed: 3}
pruner: {type: none}
space:
  model.model_type: {choices: [lstm, gru]}
  train.learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
"""


@pytest.fixture(scope="module")
def server():
    with postgres_server() as pg:
        yield pg


@pytest.fixture
def database_url(server):
    return server.url


def _env() -> dict:
    # Short heartbeats so a killed worker's trial is failed and retried within seconds.
    return {**os.environ, "SWEEP_HEARTBEAT_INTERVAL": "1", "SWEEP_GRACE_PERIOD": "4"}


def _start_worker(
    spec: Path, url: str, cwd: Path, artifacts: Path | None = None, patience: float = 60
) -> subprocess.Popen:
    """`sweep run` in `cwd`; without `artifacts`, the checkpoints go to the store the study recorded.

    At a lower priority (nice 5) than the test: with many workers on 2 cores, a test that watches
    them for the moment to kill one would otherwise get a few looks in a whole run."""
    command = ["nice", "-n", "5", SWEEP, "run", str(spec), "--storage", url, "--threads", "1"]  # nice execs: same pid
    command += ["--artifacts", str(artifacts)] if artifacts else []
    return subprocess.Popen(
        command,
        cwd=cwd,
        env={**_env(), "SWEEP_STORAGE_PATIENCE": str(patience)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_three_workers_one_killed_exact_total(tmp_path, database_url):
    """Three workers in their own folders (as on three machines) share one artifact store; one is killed
    mid-trial. Then, with the workers' folders gone, a fourth folder reports and evaluates the best model."""
    spec = tmp_path / "pg.yaml"
    spec.write_text(SPEC)
    first = subprocess.run(
        [
            SWEEP,
            "run",
            str(spec),
            "--storage",
            database_url,
            "--trials",
            "1",
            "--artifacts",
            str(tmp_path / "shared"),  # recorded by the study: the workers below find it there
            "--threads",
            "1",
        ],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stdout + first.stderr  # creates the study once, runs one trial
    assert database_url.split(":")[2].split("@")[0] not in first.stdout + first.stderr  # the password never shows

    machines = [tmp_path / f"machine-{i}" for i in range(3)]
    workers = []
    for machine in machines:
        machine.mkdir()
        workers.append(_start_worker(spec, database_url, machine))
    storage = optuna.storages.RDBStorage(database_url)
    study = optuna.load_study(study_name="pg-kill", storage=storage)
    killed_number, dead = None, []
    try:
        deadline = time.time() + 120
        while killed_number is None and len(dead) < 2 and time.time() < deadline:
            for victim in [w for w in workers if w not in dead and w.poll() is None]:  # whichever is mid-trial
                killed_number = kill_mid_trial(study, victim, epochs=16, others=True)
                dead += [victim] if victim.poll() is not None else []
                if killed_number is not None or victim in dead:
                    break
            time.sleep(0.1)
        assert killed_number is not None, "no worker was killed mid-trial"
        survivors = [w for w in workers if w not in dead]
        outputs = [w.communicate(timeout=300)[0] for w in survivors]
        assert all(w.returncode == 0 for w in survivors), outputs
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()

    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 9  # --trials is the exact total across all workers
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    killed = next(t for t in trials if t.number == killed_number)
    assert killed.state == TrialState.FAIL
    retries = [t for t in finished if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed_number]
    assert len(retries) == 1 and retries[0].params == killed.params  # retried with the same parameters
    from sweep.store.queries import read_trials

    assert (
        read_trials(study) == optuna.load_study(study_name="pg-kill", storage=database_url).get_trials()
    )  # on PostgreSQL
    _best_checkpoint_reachable_from_elsewhere(tmp_path, database_url, study, machines)


def _best_checkpoint_reachable_from_elsewhere(tmp_path: Path, url: str, study: optuna.Study, machines: list) -> None:
    import shutil

    from sweep.spec.objectives import best_trial

    best = best_trial(study)
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == [best.user_attrs["artifact_id"]]
    assert not [p for m in machines for p in m.rglob("*.pt")]  # nothing stayed on the "machines"
    for machine in machines:
        shutil.rmtree(machine)
    third = tmp_path / "elsewhere"
    third.mkdir()

    def sweep(*args: str) -> str:
        done = subprocess.run([SWEEP, *args, "--storage", url], cwd=third, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    sweep("report", "pg-kill", "--out", "r.html")
    page = (third / "r.html").read_text()
    assert f"The best trial, {best.number} of pg-kill" in page and "not available here" not in page
    subprocess.run([SWEEP, "data", "d.csv", "--lengths", "2"], cwd=third, check=True, capture_output=True)
    evaluated = json.loads(sweep("evaluate", f"pg-kill:{best.number}", "d.csv", "--json"))
    assert evaluated["n_rows"] == 100 and 0 <= evaluated["exact_match"] <= 1


def test_wrong_password_is_one_line_without_the_password(tmp_path, database_url):
    spec = tmp_path / "pg.yaml"
    spec.write_text(SPEC)
    wrong = database_url.replace("sweep:", "sweep:notthepassword", 1)
    result = subprocess.run(
        [SWEEP, "run", str(spec), "--storage", wrong], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open storage"), result.stderr
    assert "notthepassword" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_unreachable_server_is_one_line(tmp_path, database_url):
    spec = tmp_path / "pg.yaml"
    spec.write_text(SPEC)
    port = database_url.rsplit(":", 1)[1].split("/")[0]
    closed = database_url.replace(f":{port}/", ":1/")
    result = subprocess.run(
        [SWEEP, "ls", "--storage", closed], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open storage"), result.stderr
    assert database_url.split(":")[2].split("@")[0] not in result.stderr


def test_storage_lost_mid_run_then_resumed(tmp_path, server):
    spec = tmp_path / "lost.yaml"
    spec.write_text(SPEC.replace("name: pg-kill", "name: pg-lost").replace("n_trials: 9", "n_trials: 4"))
    worker = _start_worker(spec, server.url, tmp_path, tmp_path / "ckpt", patience=2)  # patience 2: gives up at once
    storage = optuna.storages.RDBStorage(server.url)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            names = [s.study_name for s in storage.get_all_studies()]
            if "pg-lost" in names and optuna.load_study(study_name="pg-lost", storage=storage).get_trials(
                deepcopy=False, states=(TrialState.RUNNING,)
            ):
                break
            time.sleep(0.2)
        storage.engine.dispose()
        server.stop("fast")  # the database goes away in the middle of a trial
        output, _ = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        server.start()
    assert worker.returncode == 1, output
    error_lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "lost the storage" in error_lines[0], output
    assert "Traceback" not in output
    assert server.password not in output

    resumed = subprocess.run(
        [SWEEP, "run", str(spec), "--storage", server.url, "--artifacts", str(tmp_path / "ckpt"), "--threads", "1"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = optuna.load_study(study_name="pg-lost", storage=optuna.storages.RDBStorage(server.url))
    trials = study.get_trials(deepcopy=False)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 4
    assert not [
        t for t in trials if t.state == TrialState.RUNNING
    ]  # the interrupted trial was failed (stale) and retried


MANY_SPEC = """
name: pg-many
n_trials: 160
data: {lengths: [1, 2], val_fraction: 0.2}
fixed: {train.n_epochs: 2, train.seed: 0, model.hidden_size: 8}
sampler: {type: random, seed: 7}
pruner: {type: none}
space:
  model.model_type: {choices: [lstm, gru]}
  train.learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
"""
N_WORKERS = 16


def test_sixteen_workers_two_killed_at_random_moments(tmp_path, server):
    """16 `sweep run` processes on one server, 160 tiny trials; two are SIGKILLed at random moments of
    a running trial. The total is exact, numbers unique, nothing left running, and the connections
    stay within what docs/scaling.md says N workers need (2 per worker + 1 per `sweep run`)."""
    import random

    spec = tmp_path / "many.yaml"
    spec.write_text(MANY_SPEC)
    rng = random.Random(16)
    workers = [_start_worker(spec, server.url, tmp_path, tmp_path / "shared") for _ in range(N_WORKERS)]
    storage = optuna.storages.RDBStorage(server.url)
    peak, killed, dead = 0, {}, set()  # killed: pid -> the trial it left unfinished; dead: every pid killed
    try:
        deadline = time.time() + 600
        while any(w.poll() is None for w in workers) and time.time() < deadline:
            peak = max(peak, server.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'sweep'")[0][0])
            if len(killed) < 2 and "pg-many" in optuna.get_all_study_names(storage):
                _kill_one_mid_trial(storage, workers, killed, dead, rng)
            time.sleep(0.05)
        outputs = [w.communicate(timeout=600)[0] for w in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    assert len(killed) == 2, "no two workers were killed mid-trial"
    survivors = [out for w, out in zip(workers, outputs, strict=True) if w.pid not in dead]
    assert all(w.returncode == 0 for w in workers if w.pid not in dead), survivors
    assert not [out for out in outputs if "too many connections" in out or "Traceback" in out]
    trials = optuna.load_study(study_name="pg-many", storage=storage).get_trials(deepcopy=False)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 160
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for number in killed.values():  # failed as stale, and retried with the same parameters
        failed = next(t for t in trials if t.number == number)
        assert failed.state == TrialState.FAIL
        # its own retry: the last of a retry's history (the other victim may have been running that retry)
        assert [t.params for t in trials if RetryHeartbeatStaleTrialCallback.retry_history(t)[-1:] == [number]] == [
            failed.params
        ]
    print(f"peak connections to the database: {peak} ({N_WORKERS} `sweep run` processes); killed {len(dead)}")
    # 2 per worker + 1 for the monitor of each `sweep run`, + 2 of this test's own (its storage, its count)
    assert 0 < peak <= 3 * N_WORKERS + 2, peak


def _kill_one_mid_trial(storage, workers: list, killed: dict, dead: set, rng) -> None:
    """At a random moment, freeze a random live worker and SIGKILL it if it is running a trial (else let
    it go on). Freezing before looking leaves no gap in which its trial could end unseen. A victim
    whose trial still finished (its last commit was on the way) is dead all the same, but not counted
    as killed mid-trial: another is picked."""
    live = [w for w in workers if w.pid not in dead and w.poll() is None]
    if not live:
        return
    victim = rng.choice(live)
    time.sleep(rng.uniform(0.0, 0.05))  # a random moment (trials take ~0.1-1 s here)
    # any trial it is running, even one past its last report: the check after the kill decides
    number = kill_mid_trial(optuna.load_study(study_name="pg-many", storage=storage), victim, epochs=3, others=True)
    if victim.poll() is not None:
        dead.add(victim.pid)
    if number is not None:
        killed[victim.pid] = number


# ---------------------------------------------------------------------------------------------
# Faults: the database restarts under a running study

RESTART_SPEC = MANY_SPEC.replace("name: pg-many", "name: pg-restart").replace("n_trials: 160", "n_trials: 120")
RESTART_WORKERS = 8
DOWN_SECONDS = 10  # the outage the issue asks for: a fast shutdown, 10 s down, then the server starts again


def test_a_database_restart_under_eight_workers(tmp_path, server):
    """8 `sweep run` processes, 120 tiny trials; the server stops (fast shutdown) for 10 s and starts
    again. Each worker waits for it (SWEEP_STORAGE_PATIENCE) and goes on, or exits with one line; a
    second `sweep run` finishes the study; nothing finished before the outage is lost."""
    spec = tmp_path / "restart.yaml"
    spec.write_text(RESTART_SPEC)
    env = {**_env(), "SWEEP_STORAGE_PATIENCE": "40"}
    command = [SWEEP, "run", str(spec), "--storage", server.url, "--threads", "1", "--artifacts", str(tmp_path / "a")]
    workers = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(RESTART_WORKERS)
    ]
    storage = optuna.storages.RDBStorage(server.url)
    try:
        before = _finished_when(storage, "pg-restart", at_least=30)
        storage.engine.dispose()
        server.stop("fast")
        time.sleep(DOWN_SECONDS)
        server.start()
        outputs = [w.communicate(timeout=300)[0] for w in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    rode_out = [w.returncode == 0 for w in workers]
    for worker, out in zip(workers, outputs, strict=True):
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert "Traceback" not in out, out
        assert worker.returncode == 0 or (worker.returncode == 1 and len(errors) == 1), out
    print(f"workers that rode the restart out: {sum(rode_out)} of {RESTART_WORKERS}; finished before it: {len(before)}")
    assert all(rode_out), outputs  # 10 s down is well within their patience of 40 s
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    trials = optuna.load_study(study_name="pg-restart", storage=storage).get_trials(deepcopy=False)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 120
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    after = {t.number: (t.state, t.values, t.params) for t in trials}
    assert all(after[number] == kept for number, kept in before.items())  # no finished trial lost or changed


def _finished_when(storage, name: str, at_least: int) -> dict:
    """Once `at_least` trials of the study finished: each finished trial's (state, values, params)."""
    deadline = time.time() + 300
    while time.time() < deadline:
        if name in optuna.get_all_study_names(storage):
            trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
            finished = {
                t.number: (t.state, t.values, t.params)
                for t in trials
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            }
            if len(finished) >= at_least:
                return finished
        time.sleep(0.2)
    raise AssertionError(f"{at_least} trials of {name} did not finish in time")


def test_a_new_study_on_postgresql_needs_a_checkpoint_store_every_machine_reaches(tmp_path, database_url, monkeypatch):
    from sweep_helpers import invoke

    from sweep.store.records import StudyMeta

    monkeypatch.delenv("SWEEP_ARTIFACTS", raising=False)
    spec = tmp_path / "pg.yaml"
    spec.write_text(SPEC.replace("name: pg-kill", "name: pg-shared"))
    refused = invoke("run", spec, "--storage", database_url, "--trials", "1")
    assert refused.exit_code == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "needs a checkpoint store every machine reaches: pass --artifacts" in refused.stderr
    assert "pg-shared" not in [s.study_name for s in optuna.get_all_study_summaries(database_url)]  # nothing stored
    checked = invoke("check", spec, "--storage", database_url)
    assert "checkpoints: none yet; `sweep run` would refuse" in checked.stdout, checked.output

    shared = tmp_path / "shared"
    monkeypatch.setenv("SWEEP_ARTIFACTS", str(shared))
    assert f"checkpoints: {shared} (from $SWEEP_ARTIFACTS)" in invoke("check", spec, "--storage", database_url).stdout
    ran = invoke("run", spec, "--storage", database_url, "--trials", "1", "--threads", "1")
    assert ran.exit_code == 0, ran.output
    study = optuna.load_study(study_name="pg-shared", storage=database_url)
    assert StudyMeta.read(study).artifacts == str(shared) and any(shared.iterdir())
    monkeypatch.delenv("SWEEP_ARTIFACTS")  # the study keeps the store it recorded
    again = invoke("check", spec, "--storage", database_url)
    assert f"checkpoints: {shared} (recorded by study 'pg-shared')" in again.stdout, again.output
