"""Day parts on object storage (issue 20): the parts in an S3-compatible bucket instead of ``<store>.parts/``.

The bucket is a local moto server (``moto.server.ThreadedMotoServer`` on a free loopback port, dummy
credentials in the AWS_* variables). The unit tests write, list, fingerprint, count and remove parts
through ``convocausal.part_store``; the integration test runs the whole pipeline once with local
parts and once with the parts in the bucket, and the tables and estimates must be equal; then a
day lands and the nightly increment publishes only it, reading from the bucket.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from datetime import date

import polars as pl
import pytest

from convocausal.part_store import PartsUrlError, S3Parts, parse_parts_url
from convocausal.store import (
    PART_TABLES,
    connect,
    list_parts,
    open_signals,
    publish,
    remove_days,
    store_paths,
    write_day,
)

moto_server = pytest.importorskip("moto.server", reason="moto (requirements.lock) is not installed")

N_CONVERSATIONS = 8_000
DAY_STEP = 7  # of the 182 generated days, 26 are kept
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 and a function making a fresh bucket; yields (endpoint, new_bucket)."""
    mp = pytest.MonkeyPatch()
    for k, v in AWS_ENV.items():
        mp.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        mp.delenv(k, raising=False)
    werkzeug = logging.getLogger("werkzeug")  # one INFO line per request would bury a failure's report
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"{host}:{port}"

    def new_bucket() -> str:
        import pyarrow.fs as pafs

        name = f"parts-{uuid.uuid4().hex[:10]}"
        pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True).create_dir(name)
        return name

    try:
        yield endpoint, new_bucket
    finally:
        server.stop()
        werkzeug.setLevel(level)
        mp.undo()


def _url(endpoint: str, bucket: str, prefix: str = "store/parts") -> str:
    return f"s3://{bucket}/{prefix}?endpoint_override={endpoint}&scheme=http"


def _keys(endpoint: str, bucket: str) -> list[str]:
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http")
    return sorted(i.path.removeprefix(bucket + "/") for i in fs.get_file_info(pafs.FileSelector(bucket, recursive=True))
                  if i.type == pafs.FileType.File)


# ---------------------------------------------------------------- the URL

@pytest.mark.parametrize("url", [
    "s3://my-bucket", "s3://my.bucket-1/a/b_c/d.e", "s3://bkt/p?endpoint_override=127.0.0.1:9000&scheme=http",
    "s3://bkt/p/?region=eu-west-1&endpoint_override=minio.internal", "s3://bkt/p?scheme=https",
])
def test_good_urls_parse(url):
    u = parse_parts_url(url)
    assert u.bucket and "/" not in u.bucket and not u.prefix.endswith("/")


@pytest.mark.parametrize("url, why", [
    ("", "empty"),
    ("/tmp/parts", "only s3://"),
    ("file:///tmp/parts", "only s3://"),
    ("gs://bkt/p", "only s3://"),
    ("s3://AKIA:secret@bkt/p", "credentials do not belong"),
    ("s3://bkt:9000/p", "no port"),
    ("s3://Bad_Bucket/p", "not a valid S3 bucket name"),
    ("s3://ab/p", "not a valid S3 bucket name"),
    ("s3://a..b/p", "not a valid S3 bucket name"),
    ("s3://192.168.1.1/p", "not a valid S3 bucket name"),
    ("s3://bkt/../etc", "prefix segment '..'"),
    ("s3://bkt/a//b", "prefix segment ''"),
    ("s3://bkt/a b", "whitespace"),
    ("s3://bkt/a;rm -rf", "whitespace"),
    ("s3://bkt/a$(id)", "prefix segment"),
    ("s3://bkt/p?access_key=x", "unknown query key 'access_key'"),
    ("s3://bkt/p?scheme=ftp", "scheme must be http or https"),
    ("s3://bkt/p?scheme=http&scheme=https", "given twice"),
    ("s3://bkt/p?endpoint_override=http://h:1", "endpoint_override must be host or host:port"),
    ("s3://bkt/p?endpoint_override=h:99999", "endpoint_override must be host or host:port"),
    ("s3://bkt/p?region=Mars", "not an AWS region name"),
    ("s3://bkt/p#frag", "no #fragment"),
])
def test_bad_urls_are_one_line_naming_the_setting(url, why):
    with pytest.raises(PartsUrlError) as err:
        parse_parts_url(url)
    text = str(err.value)
    assert "\n" not in text and text.startswith("parts_url (--parts-url, CONVOCAUSAL_PARTS_URL): ")
    assert why in text, text
    assert "secret" not in text and "AKIA" not in text  # a key typed into the URL is not echoed


def test_store_paths_checks_the_url_before_anything(tmp_path):
    with pytest.raises(PartsUrlError):
        store_paths(tmp_path / "s.duckdb", "s3://bkt/p?token=x")
    assert not list(tmp_path.iterdir())


def test_cli_run_refuses_a_bad_parts_url(tmp_path, capsys):
    from convocausal.cli import main

    raw = tmp_path / "raw"
    (raw / "transcripts").mkdir(parents=True)
    code = main(["run", "--raw", str(raw), "--store", str(tmp_path / "s.duckdb"), "--parts-url", "s3://bkt/p?x=1"])
    err = capsys.readouterr().err
    assert code == 2 and "parts_url (--parts-url, CONVOCAUSAL_PARTS_URL)" in err and "unknown query key 'x'" in err
    assert not (tmp_path / "s.duckdb").exists()


# ---------------------------------------------------------------- the S3 part store

def _frame(n: int, offset: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"conversation_id": [f"c{i + offset}" for i in range(n)], "x": list(range(n))})


def test_write_list_count_read_remove(s3, tmp_path):
    endpoint, new_bucket = s3
    bucket = new_bucket()
    paths = store_paths(tmp_path / "s.duckdb", _url(endpoint, bucket))
    parts = paths.part_store
    assert isinstance(parts, S3Parts)
    assert not paths.has_parts("signals")
    d1, d2 = date(2026, 1, 1), date(2026, 1, 2)
    write_day(paths, d1, _frame(3), _frame(1).select("conversation_id"))
    write_day(paths, d2, _frame(5, 10), _frame(0).select("conversation_id"))
    assert _keys(endpoint, bucket) == sorted(f"store/parts/{t}/date={d}/part.parquet" for t in PART_TABLES
                                             for d in (d1, d2))
    assert not paths.parts.exists()  # nothing local: the parts are in the bucket
    listing = list_parts(paths, "signals")
    assert listing.days == [d1, d2]
    assert listing.files[d1][0] == f"s3://{bucket}/store/parts/signals/date=2026-01-01/part.parquet"
    assert {d: parts.num_rows(f) for d, (f, _) in listing.files.items()} == {d1: 3, d2: 5}
    assert parts.read_column("signals", "conversation_id").sort().to_list() == sorted(
        [f"c{i}" for i in range(3)] + [f"c{i}" for i in range(10, 15)])
    con = open_signals(paths)
    try:
        got = con.execute("SELECT date, count(*) FROM signals GROUP BY 1 ORDER BY 1").fetchall()
    finally:
        con.close()
    assert got == [(d1, 3), (d2, 5)]
    assert remove_days(paths, [d1, date(2026, 3, 1)]) == [d1]
    assert list_parts(paths, "signals").days == [d2] and list_parts(paths, "quarantine").days == [d2]


def test_a_replaced_object_gets_a_new_fingerprint(s3, tmp_path):
    """Even rewritten within the same second with the same size (S3 mtimes are whole seconds)."""
    endpoint, new_bucket = s3
    paths = store_paths(tmp_path / "s.duckdb", _url(endpoint, new_bucket()))
    day = date(2026, 2, 1)
    paths.part_store.write("signals", day, _frame(4))
    first = list_parts(paths, "signals").files[day][1]
    paths.part_store.write("signals", day, _frame(4, 100))  # same shape, same size, other rows
    second = list_parts(paths, "signals").files[day][1]
    assert first != second
    assert paths.part_store.read_column("signals", "conversation_id").to_list()[0] == "c100"


def test_publish_from_the_bucket_is_incremental(s3, tmp_path):
    endpoint, new_bucket = s3
    paths = store_paths(tmp_path / "s.duckdb", _url(endpoint, new_bucket(), "p"))
    days = [date(2026, 1, d) for d in range(1, 5)]
    for i, d in enumerate(days):
        write_day(paths, d, _frame(2 + i, 10 * i), _frame(0).select("conversation_id"))
    report: dict = {}
    assert publish(paths, report=report)["signals"] == 2 + 3 + 4 + 5
    assert report["signals"]["mode"] == "rebuild"
    write_day(paths, days[1], _frame(7, 500), _frame(0).select("conversation_id"))
    report = {}
    assert publish(paths, report=report)["signals"] == 2 + 7 + 4 + 5
    assert report["signals"] == {"mode": "incremental", "reason": "", "days": [days[1]]}
    report = {}
    publish(paths, report=report)
    assert report["signals"]["mode"] == "unchanged"
    with connect(paths.db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM signals WHERE date = ?", [days[1]]).fetchone()[0] == 7
    assert not paths.parts.exists()


# ---------------------------------------------------------------- the whole pipeline
# Marked slow (about 60 s of CPU: three pipeline runs); `.ci/run` runs them after `make test`.

@pytest.fixture(scope="module")
def runs(s3, tmp_path_factory):
    from benchmarks.bench_increment import hold_back, land, last_day, run_increment
    from data_fixtures.generator import generate
    from pipelines.runner import run_pipeline

    endpoint, new_bucket = s3
    bucket = new_bucket()
    url = _url(endpoint, bucket, "nightly/parts")
    work = tmp_path_factory.mktemp("object_storage")
    raw = work / "raw"
    generate(raw, n_conversations=N_CONVERSATIONS, seed=3)
    days = sorted((raw / "transcripts").glob("date=*"), reverse=True)
    for i, folder in enumerate(days):  # every DAY_STEP-th day, the last included: each object costs a few
        if i % DAY_STEP:  # requests to moto, and the launches of the questions keep days before and after
            shutil.rmtree(folder)
    day = last_day(raw)
    local, remote = work / "local.duckdb", work / "remote.duckdb"
    hold_back(raw, day, work)
    rows_local = run_pipeline(raw, local)
    rows_remote = run_pipeline(raw, remote, parts_url=url)
    out = {"endpoint": endpoint, "bucket": bucket, "url": url, "day": day, "local": local, "remote": remote,
           "rows_local": rows_local, "rows_remote": rows_remote, "keys": _keys(endpoint, bucket)}
    out["tables"] = {t: (_table(local, t), _table(remote, t)) for t in PART_TABLES}
    land(raw, day, work)
    publish_mode: dict = {}
    out["rows_increment"] = run_increment(raw, remote, day, publish_report=publish_mode, parts_url=url)
    out["publish"] = publish_mode
    out["keys_after"] = _keys(endpoint, bucket)
    yield out
    shutil.rmtree(work, ignore_errors=True)


def _table(db, table: str) -> pl.DataFrame:
    with connect(db, read_only=True) as con:
        df = pl.from_arrow(con.sql(f"SELECT * FROM {table}").to_arrow_table())
    return df.sort(df.columns, nulls_last=True)


@pytest.mark.slow
def test_the_parts_are_objects_under_the_prefix_and_not_local(runs):
    keys = runs["keys"]
    assert keys and all(k.startswith("nightly/parts/") and k.endswith("/part.parquet") for k in keys)
    days = {k.split("/")[3] for k in keys if k.split("/")[2] == "signals"}
    assert len(days) == len(range(0, 182, DAY_STEP)) - 1 and f"date={runs['day']}" not in days
    assert {k.split("/")[2] for k in keys} == set(PART_TABLES)
    parts = runs["remote"].with_name(runs["remote"].name + ".parts")
    assert not (parts / "signals").exists() and not (parts / "quarantine").exists()
    assert (parts / "reports").is_dir()  # memos and reports stay local
    assert (runs["local"].with_name(runs["local"].name + ".parts") / "signals").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("table", PART_TABLES)
def test_tables_equal_local_parts(runs, table):
    a, b = runs["tables"][table]
    assert a.height > 0 or table == "quarantine"
    assert a.schema == b.schema
    assert a.equals(b), f"{table}: parts in the bucket gave another table than local parts"


@pytest.mark.slow
def test_estimates_equal_local_parts(runs):
    from tests.test_increment import assert_same_estimates

    a = assert_same_estimates(runs["rows_local"], runs["rows_remote"])
    assert sum(r["status"] == "ok" for r in a.values()) >= 2, {q: r["status"] for q, r in a.items()}


@pytest.mark.slow
def test_a_new_day_publishes_incrementally_from_the_bucket(runs):
    for table in PART_TABLES:
        assert runs["publish"][table]["mode"] == "incremental", runs["publish"]
    assert f"nightly/parts/signals/date={runs['day']}/part.parquet" in runs["keys_after"]
    with connect(runs["remote"], read_only=True) as con:
        assert con.execute("SELECT max(date) FROM signals").fetchone()[0] == runs["day"]
        n_parts = con.execute("SELECT count(*) FROM convocausal_parts WHERE part_table = 'signals'").fetchone()[0]
    assert n_parts == sum(k.startswith("nightly/parts/signals/") for k in runs["keys_after"])
    assert all(r["status"] in ("ok", "refused") for r in runs["rows_increment"])
