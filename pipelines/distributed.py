"""A real distributed run on one machine: Dagster on PostgreSQL, Celery executor, Redis broker, 2 workers.

``python -m pipelines.distributed --raw DIR --store FILE [--reference FILE]`` (``scripts/distributed_run.sh``):
starts PostgreSQL (``initdb`` in a temp dir, run as the ``postgres`` system user when running as root),
``redis-server`` on a free loopback port, writes a ``dagster.yaml`` (run, event-log and schedule storage
on PostgreSQL) into a temp ``DAGSTER_HOME``, starts two ``celery -A dagster_celery.app worker`` processes,
then runs ``extraction_job`` over every landing day (one backfill run), ``register_questions`` and one
``question_job`` run per question with ``CONVOCAUSAL_EXECUTOR=celery``; every step is a Celery task run
by a worker. All processes share the store on the local filesystem. Everything it started is stopped
on exit. With ``--reference``, the single-process ``run_pipeline`` is run into that store too and
the tables ``signals`` and ``estimates`` (estimate/CI columns) are compared.
Exit code 0: ran (and equal, when compared); 3: a service could not start (the reason is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PG_BIN = Path(os.environ.get("CONVOCAUSAL_PG_BIN", "/usr/lib/postgresql/15/bin"))


class ServiceUnavailable(RuntimeError):
    """A service (postgres, redis, dagster-celery) is missing or would not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, name: str, timeout: float = 30) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise ServiceUnavailable(f"{name} exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.2)
    raise ServiceUnavailable(f"{name} did not listen on port {port} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def check_services() -> None:
    """Raise ServiceUnavailable with the reason when the run cannot start here."""
    for exe in ("initdb", "postgres"):
        if not (PG_BIN / exe).exists():
            raise ServiceUnavailable(f"PostgreSQL not found: {PG_BIN / exe} (apt-get install postgresql)")
    if shutil.which("redis-server") is None:
        raise ServiceUnavailable("redis-server not found (apt-get install redis-server)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        raise ServiceUnavailable("running as root and runuser is missing (postgres refuses root)")
    try:
        import dagster_celery  # noqa: F401
        import dagster_postgres  # noqa: F401
    except ImportError as exc:
        raise ServiceUnavailable(f"{exc.name} not installed (pip install -r requirements-distributed.lock)")


@contextlib.contextmanager
def postgres(tmp: Path):
    """A throwaway PostgreSQL cluster on a free loopback port; yields its URL."""
    data = tmp / "pgdata"
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the postgres system user
        user = "postgres" if _user_exists("postgres") else "nobody"
        as_user = ["runuser", "-u", user, "--"]
        tmp.chmod(0o755)
        data.mkdir()
        shutil.chown(data, user)
    port = free_port()
    init = subprocess.run(as_user + [str(PG_BIN / "initdb"), "-D", str(data), "-U", "dagster", "-A", "trust",
                                     "-E", "UTF8", "--no-sync"], capture_output=True, text=True, check=False)
    if init.returncode:
        raise ServiceUnavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
    log = open(tmp / "postgres.log", "w")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(as_user + [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
                                       "-h", "127.0.0.1", "-k", str(data), "-c", "fsync=off"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, "postgres")
        time.sleep(0.5)
        yield f"postgresql+psycopg2://dagster@127.0.0.1:{port}/postgres"
    finally:
        _stop(proc)
        log.close()


def _user_exists(name: str) -> bool:
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@contextlib.contextmanager
def redis(tmp: Path):
    port = free_port()
    log = open(tmp / "redis.log", "w")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)
        log.close()


DAGSTER_YAML = """\
run_storage:
  module: dagster_postgres.run_storage
  class: PostgresRunStorage
  config:
    postgres_url: "{url}"
event_log_storage:
  module: dagster_postgres.event_log
  class: PostgresEventLogStorage
  config:
    postgres_url: "{url}"
schedule_storage:
  module: dagster_postgres.schedule_storage
  class: PostgresScheduleStorage
  config:
    postgres_url: "{url}"
telemetry:
  enabled: false
"""


@contextlib.contextmanager
def workers(tmp: Path, env: dict, broker: str, n: int = 2):
    procs = []
    try:
        for i in range(n):
            log = open(tmp / f"worker{i + 1}.log", "w")  # noqa: SIM115 (closed in finally)
            procs.append((subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "-b", broker, "--result-backend",
                 broker, "worker", "-Q", "dagster", "-c", "1", "--prefetch-multiplier=1", "-n",
                 f"convocausal{i + 1}@%h", "--loglevel", "INFO"],
                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), log))
        _wait_workers(broker, env, n, procs)
        yield [p.pid for p, _ in procs]
    finally:
        for p, log in procs:
            _stop(p, timeout=30)
            log.close()


def _wait_workers(broker: str, env: dict, n: int, procs, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        for p, _ in procs:
            if p.poll() is not None:
                raise ServiceUnavailable(f"celery worker exited with code {p.returncode}")
        out = subprocess.run([sys.executable, "-m", "celery", "-A", "dagster_celery.app", "-b", broker,
                              "inspect", "ping", "--timeout", "2"], env=env, cwd=REPO,
                             capture_output=True, text=True, check=False)
        if out.stdout.count("pong") >= n:
            return
        time.sleep(1)
    raise ServiceUnavailable(f"{n} celery workers did not answer within {timeout:.0f} s")


def _execute(env: dict, fn: str, tags: dict | None = None, run_config: dict | None = None) -> dict:
    """Run one job in a fresh driver process (its imports see this env), return {run_id, success, pids}."""
    code = (
        "import json, sys, dagster as dg\n"
        "import pipelines.definitions as d\n"
        f"job = dg.reconstructable(getattr(d, {fn!r}))\n"
        "with dg.DagsterInstance.get() as inst:\n"
        f"    res = dg.execute_job(job, instance=inst, tags={tags or {}!r}, run_config={run_config or {}!r},"
        " raise_on_error=False)\n"
        "    pids = sorted({e.dagster_event.pid for e in inst.all_logs(res.run_id)\n"
        "                   if e.dagster_event and e.dagster_event.event_type_value == 'STEP_START'})\n"
        "    from pipelines.runner import _only_check_failures\n"
        "    ok = res.success or _only_check_failures(res)\n"
        "    print('RESULT ' + json.dumps({'run_id': res.run_id, 'success': ok, 'pids': pids,"
        " 'driver_pid': __import__('os').getpid()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{fn} failed (exit {out.returncode}): {out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def distributed_run(raw: Path, store: Path, log=print) -> dict:
    """Start the services, run the graph through the Celery workers, stop everything; return a summary."""
    from pipelines.runner import complete_days

    check_services()
    days = complete_days(raw, store=store)
    from convocausal.questions.registry import load_registry
    qids = [q.id for q in load_registry(os.environ.get("CONVOCAUSAL_QUESTIONS_CONFIG") or None).questions]
    summary: dict = {"days": len(days), "questions": qids, "runs": []}
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="convocausal-dist-") as tmpname:
        tmp = Path(tmpname)
        with postgres(tmp) as pg_url, redis(tmp) as broker:
            home = tmp / "dagster_home"
            home.mkdir()
            (home / "dagster.yaml").write_text(DAGSTER_YAML.format(url=pg_url))
            env = {**os.environ, "DAGSTER_HOME": str(home), "CONVOCAUSAL_EXECUTOR": "celery",
                   "CONVOCAUSAL_CELERY_BROKER": broker, "CONVOCAUSAL_CELERY_BACKEND": broker,
                   "CONVOCAUSAL_RAW": str(raw), "CONVOCAUSAL_STORE": str(store),
                   "CONVOCAUSAL_START_DATE": days[0].isoformat(),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
            log(f"postgres {pg_url}, redis {broker}, DAGSTER_HOME {home}")
            with workers(tmp, env, broker) as pids:
                summary["worker_pids"] = pids
                summary["services_s"] = round(time.time() - t0, 1)
                log(f"2 celery workers up (pids {pids}) after {summary['services_s']} s")
                steps = [("extraction_job_for_subprocesses",
                          {"dagster/asset_partition_range_start": days[0].isoformat(),
                           "dagster/asset_partition_range_end": days[-1].isoformat()}),
                         ("register_questions_for_subprocesses", None)]
                steps += [("question_job_for_subprocesses", {"dagster/partition": q}) for q in qids]
                for fn, tags in steps:
                    t = time.time()
                    res = _execute(env, fn, tags)
                    res.update(job=fn, tags=tags or {}, seconds=round(time.time() - t, 1))
                    summary["runs"].append(res)
                    log(f"{fn} {tags or ''}: success={res['success']} in {res['seconds']} s, "
                        f"step pids {res['pids']}")
                    if not res["success"]:
                        raise RuntimeError(f"{fn} failed; worker logs in {tmp}: "
                                           + (tmp / "worker1.log").read_text()[-2000:]
                                           + (tmp / "worker2.log").read_text()[-2000:])
    summary["total_s"] = round(time.time() - t0, 1)
    return summary


def compare_stores(a: Path, b: Path) -> list[str]:
    """Differences between two stores' ``signals`` and ``estimates`` (estimate/CI), ignoring run ids and times."""
    from convocausal.store import connect

    diffs = []
    with connect(a, read_only=True) as ca, connect(b, read_only=True) as cb:
        cols = [r[0] for r in ca.execute("DESCRIBE signals").fetchall()
                if not any(s in r[0] for s in ("run_id", "_at", "timestamp", "written"))]
        sel = ", ".join(f'"{c}"' for c in cols)
        sa = ca.execute(f"SELECT {sel} FROM signals ORDER BY ALL").fetchall()
        sb = cb.execute(f"SELECT {sel} FROM signals ORDER BY ALL").fetchall()
        if sa != sb:
            diffs.append(f"signals differ: {len(sa)} vs {len(sb)} rows")
        ecols = [r[0] for r in ca.execute("DESCRIBE estimates").fetchall()]
        keep = [c for c in ("question_id", "method", "estimate", "ci_low", "ci_high", "p_value") if c in ecols]
        q = f"SELECT {', '.join(keep)} FROM estimates ORDER BY ALL"
        ea, eb = ca.execute(q).fetchall(), cb.execute(q).fetchall()
        if ea != eb:
            diffs.append(f"estimates differ:\n  distributed {ea}\n  single      {eb}")
    return diffs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", required=True, type=Path)
    ap.add_argument("--store", required=True, type=Path)
    ap.add_argument("--reference", type=Path, help="also run single-process into this store and compare")
    ap.add_argument("--json", type=Path, help="write the summary here")
    args = ap.parse_args(argv)
    try:
        summary = distributed_run(args.raw.resolve(), args.store.resolve())
    except ServiceUnavailable as exc:
        print(f"distributed run not possible here: {exc}", file=sys.stderr)
        return 3
    if args.reference:
        from pipelines.runner import run_pipeline
        t = time.time()
        run_pipeline(args.raw.resolve(), args.reference.resolve())
        summary["single_process_s"] = round(time.time() - t, 1)
        summary["differences"] = compare_stores(args.store.resolve(), args.reference.resolve())
        print(f"single-process run {summary['single_process_s']} s; "
              + ("stores equal (signals; estimates estimate/CI)" if not summary["differences"]
                 else "DIFFERENT:\n" + "\n".join(summary["differences"])))
    print(f"distributed run: {summary['total_s']} s in all")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    return 1 if summary.get("differences") else 0


if __name__ == "__main__":
    sys.exit(main())
