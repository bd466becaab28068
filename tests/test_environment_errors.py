"""A full disk, a read-only file system or a failed ROLLBACK: one line naming the cause, exit 2."""

from __future__ import annotations

import errno

import duckdb
import pytest

import pipelines.runner
from convocausal.cli import environment_error, main
from convocausal.store import rollback


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only file system"),
                                        (errno.EACCES, "permission denied")])
def test_run_on_a_full_or_read_only_disk_is_one_line_exit_2(tmp_path, monkeypatch, capsys, code, words):
    raw = tmp_path / "raw"
    (raw / "transcripts").mkdir(parents=True)

    def full(*a, **k):
        try:
            raise duckdb.IOException("could not write part")
        except duckdb.IOException as inner:
            raise OSError(code, "boom", str(tmp_path / "store.duckdb.parts" / "x.parquet")) from inner

    monkeypatch.setattr(pipelines.runner, "run_pipeline", full)
    rc = main(["run", "--raw", str(raw), "--store", str(tmp_path / "store.duckdb")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert words in err[0] and "x.parquet" in err[0] and "internal error" not in err[0]


def test_the_cause_is_found_in_a_dagster_step_message():
    class StepFailure(Exception):
        detail = "duckdb.IOException: IO Error: No space left on device"

    assert "no space left" in environment_error(StepFailure("question step failed"))
    assert environment_error(ValueError("a bug")) is None


def test_a_failing_rollback_does_not_replace_the_real_error():
    con = duckdb.connect()
    rollback(con)  # no transaction open: DuckDB refuses the ROLLBACK; the helper keeps quiet
    with pytest.raises(OSError, match="No space"):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            rollback(con)
            raise


def test_the_shipped_salt_is_refused_outside_the_demo(tmp_path, monkeypatch, capsys):
    from data_fixtures.generator import generate
    from extract.redact import DefaultSaltError, check_salt

    monkeypatch.delenv("CONVOCAUSAL_ALLOW_DEFAULT_SALT", raising=False)
    shipped = "convocausal-default-salt-change-me"
    raw = tmp_path / "exports"
    (raw / "transcripts").mkdir(parents=True)
    with pytest.raises(DefaultSaltError, match="customer_key.salt"):
        check_salt(shipped, raw)
    check_salt("a-secret-of-our-own", raw)  # a salt of one's own: fine
    check_salt(shipped, raw, environ={"CONVOCAUSAL_ALLOW_DEFAULT_SALT": "1"})  # accepted knowingly
    demo = tmp_path / "demo"
    generate(demo, n_conversations=200, seed=1)
    check_salt(shipped, demo)  # the generated fixture is synthetic: the demo runs as shipped
    rc = main(["run", "--raw", str(raw), "--store", str(tmp_path / "s.duckdb")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "salt" in err[-1] and len([line for line in err if "error" in line]) == 1
