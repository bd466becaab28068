"""``result_frame`` (text columns from Arrow) gives exactly ``con.execute(sql).df()``: the same dtypes,
values and index, with nulls, with no rows, with a text column that is all null, and with parameters."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from methods.did.compress import result_frame

QUERIES = [
    "SELECT * FROM t ORDER BY n",
    "SELECT s, d, count(*)::BIGINT AS n, sum(f) AS f FROM t GROUP BY ALL ORDER BY ALL",
    "SELECT s FROM t ORDER BY n",
    "SELECT a, n FROM t ORDER BY n",
    "SELECT * FROM t WHERE false",
    "SELECT ?::VARCHAR AS p, n FROM t ORDER BY n LIMIT 3",
    "SELECT s, 'x'::VARCHAR AS k, m FROM t WHERE s IS NULL",
    "SELECT CAST(d AS TIMESTAMP) AS ts, s FROM t ORDER BY n",  # a type outside the Arrow-safe set: df()
]


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    c.execute("""CREATE TABLE t AS SELECT (i % 7)::INTEGER AS a, (i % 3 = 0) AS b,
                 CASE WHEN i % 5 = 0 THEN NULL ELSE 'x' || (i % 4)::VARCHAR END AS s,
                 DATE '2026-01-05' + (i % 9)::INTEGER AS d, i::BIGINT AS n, (i / 3.0)::DOUBLE AS f,
                 CASE WHEN i % 11 = 0 THEN NULL ELSE i % 2 END::INTEGER AS m, (i % 3)::TINYINT AS ti,
                 CASE WHEN i % 13 = 0 THEN NULL ELSE i % 2 = 0 END AS bn,
                 CASE WHEN i % 7 = 0 THEN NULL ELSE DATE '2026-01-05' END AS dn,
                 CASE WHEN i % 7 = 0 THEN NULL ELSE i / 7.0 END::DOUBLE AS fn
                 FROM range(1000) r(i)""")
    yield c
    c.close()


@pytest.mark.parametrize("sql", QUERIES)
def test_result_frame_is_df(con, sql):
    params = ["zz"] if "?" in sql else []
    want, got = con.execute(sql, params).df(), result_frame(con, sql, params)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert list(got.dtypes) == list(want.dtypes) and got.index.equals(want.index)
