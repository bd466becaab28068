"""Where the day parts live: the store's local ``.parts`` folder, or an S3-compatible bucket (issue 20).

A day part (``<table>/date=D/part.parquet``) is only ever written whole, by one step, and read by
the publish and the question steps. On a local (or shared POSIX) folder "whole" is a temp file
renamed over the target (``store.write_parquet_atomic``); on S3 it is one object written by a single
upload (``PUT``, or a multipart upload completed at the end) of a file built in memory: readers
see the old object or the new one, never part of it, and no rename is needed. Everything else the store does with parts is
listed here, with one implementation per place: write a day, list the days with a fingerprint
per part (to find the parts changed since the last publish), remove a day, count a part's rows
from its parquet footer, and make the parts readable by a DuckDB connection.

Configuration is one URL, ``s3://bucket/prefix?endpoint_override=host:port&scheme=http&region=R``
(``--parts-url`` or ``CONVOCAUSAL_PARTS_URL``): the query carries only where the service is, never
who is asking. Credentials come from the AWS SDK's usual chain (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, ``~/.aws``, an instance
role), so no secret is ever in the URL, in the store, or in Dagster's run config. The URL is checked
strictly (:func:`parse_parts_url`) and a bad one is one line naming the setting.

pyarrow's ``S3FileSystem`` does the S3 work (no new dependency); DuckDB reads the objects through
it, wrapped as an fsspec filesystem and registered on the connection (DuckDB's own ``httpfs``
extension would need a download at runtime). Only the day parts move: the DuckDB file, the trained
models (``<store>.parts/models``) and the reports (``<store>.parts/reports``) stay local.
"""

from __future__ import annotations

import io
import ipaddress
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import polars as pl

from configs.questions import ConfigError

PART_FILE = "part.parquet"
SETTING = "parts_url (--parts-url, CONVOCAUSAL_PARTS_URL)"
QUERY_KEYS = ("endpoint_override", "scheme", "region")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_REGION = re.compile(r"[a-z]{2}(?:-[a-z0-9]+)+")


class PartsUrlError(ConfigError):
    """A parts URL that cannot be used: one line naming the setting (the CLI exits 2)."""


@dataclass(frozen=True)
class PartsUrl:
    """A checked ``s3://`` parts URL."""

    bucket: str
    prefix: str  # "" or "a/b" (no leading or trailing slash)
    endpoint_override: str | None = None
    scheme: str = "https"
    region: str | None = None

    @property
    def root(self) -> str:
        """The parts root as pyarrow names it (``bucket/prefix``)."""
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def __str__(self) -> str:  # for messages: where, never who
        query = "&".join(f"{k}={getattr(self, k)}" for k in QUERY_KEYS
                         if getattr(self, k) not in (None, "https" if k == "scheme" else None))
        return f"s3://{self.root}" + (f"?{query}" if query else "")


def parse_parts_url(url: str) -> PartsUrl:
    """Check ``url`` and split it; raise :class:`PartsUrlError` (one line) for anything unexpected.

    Accepted: scheme ``s3``; a bucket named by the S3 rules (3-63 characters of lowercase letters,
    digits, dots and hyphens, starting and ending with a letter or digit, not an IP address, no
    ``..``); an optional prefix of path segments made of letters, digits, ``.``, ``_`` and ``-``
    (no ``.``/``..`` segment, no empty one); and only the query keys ``endpoint_override``
    (``host`` or ``host:port``), ``scheme`` (``http`` or ``https``) and ``region``, each once. No
    user, password, port or fragment in the URL itself: credentials come from the environment."""
    text = str(url).strip()

    def bad(why: str) -> PartsUrlError:
        return PartsUrlError(f"{SETTING}: {why} (got {_shown(text)}); give s3://bucket/prefix, optionally "
                             "?endpoint_override=host:port&scheme=http&region=R, credentials in AWS_* variables")

    if not text:
        raise bad("empty")
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise bad("whitespace or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise bad(f"not a URL ({exc})") from None
    if parts.scheme != "s3":
        raise bad("only s3:// URLs are supported")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise bad("credentials do not belong in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if port is not None or ":" in parts.netloc:
        raise bad("no port after the bucket: give the endpoint as ?endpoint_override=host:port")
    if parts.fragment or "#" in text:
        raise bad("no #fragment")
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or ".-" in bucket or "-." in bucket or _is_ip(bucket):
        raise bad(f"bucket {bucket!r} is not a valid S3 bucket name")
    path = parts.path
    path = path.removesuffix("/")
    segments = path.split("/")[1:] if path else []
    for seg in segments:
        if seg in (".", "..") or not _SEGMENT.fullmatch(seg):
            raise bad(f"prefix segment {seg!r} is not allowed (letters, digits, '.', '_', '-')")
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise bad("the query is not key=value pairs") from None
    query: dict[str, str] = {}
    for key, value in pairs:
        if key not in QUERY_KEYS:
            raise bad(f"unknown query key {key!r} (known: {', '.join(QUERY_KEYS)})")
        if key in query:
            raise bad(f"query key {key!r} given twice")
        query[key] = value
    endpoint = query.get("endpoint_override")
    if endpoint is not None and not _endpoint_ok(endpoint):
        raise bad("endpoint_override must be host or host:port")
    scheme = query.get("scheme", "https")
    if scheme not in ("http", "https"):
        raise bad("scheme must be http or https")
    region = query.get("region")
    if region is not None and not _REGION.fullmatch(region):
        raise bad(f"region {region!r} is not an AWS region name")
    return PartsUrl(bucket, "/".join(segments), endpoint, scheme, region)


def _shown(text: str) -> str:
    """The URL for an error line, with anything before an ``@`` (a user, a key) replaced by ``***``."""
    text = re.sub(r"(?<=://)[^/?#]*@", "***@", text)
    return repr(text if len(text) <= 120 else text[:117] + "...")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _endpoint_ok(text: str) -> bool:
    host, sep, port = text.rpartition(":") if ":" in text else (text, "", "")
    if sep and not (port.isdigit() and 0 < int(port) < 65536):
        return False
    return bool(_HOST.fullmatch(host) or _is_ip(host))


def _day_of(name: str) -> date | None:
    try:
        return date.fromisoformat(name.removeprefix("date="))
    except ValueError:
        return None


class LocalParts:
    """The parts under ``<store>.parts/`` (a local or shared POSIX folder): what the store always did."""

    def __init__(self, root: Path):
        self.root = root

    def __str__(self) -> str:
        return str(self.root)

    def day_part(self, table: str, day: date) -> Path:
        return self.root / table / f"date={day.isoformat()}" / PART_FILE

    def glob(self, table: str) -> str:
        return str(self.root / table / "date=*" / PART_FILE)

    def has_parts(self, table: str) -> bool:
        return any((self.root / table).glob(f"date=*/{PART_FILE}"))

    def write(self, table: str, day: date, df: pl.DataFrame) -> None:
        from convocausal.store import write_parquet_atomic

        write_parquet_atomic(df, self.day_part(table, day))

    def days(self, table: str) -> set[date]:
        """Days with a ``date=D`` folder (a folder this module wrote)."""
        return {d for folder in (self.root / table).glob("date=*") if (d := _day_of(folder.name)) is not None}

    def list(self, table: str) -> dict[date, tuple[str, str]]:
        """Day → (file, fingerprint: inode, size, mtime in ns): a replaced part is a new inode and mtime."""
        files: dict[date, tuple[str, str]] = {}
        for folder in (self.root / table).glob("date=*"):
            day = _day_of(folder.name)
            if day is None:
                continue  # not a folder this module wrote
            try:
                st = (folder / PART_FILE).stat()
            except OSError:
                continue  # a day being removed
            files[day] = (str(folder / PART_FILE), f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        return files

    def remove(self, table: str, day: date) -> bool:
        """Rename the day folder out of the ``date=*`` pattern (atomic: a reader globbing sees the day whole or
        not at all), then delete it. True if there was one."""
        import os

        folder = self.root / table / f"date={day.isoformat()}"
        if not folder.exists():
            return False
        doomed = folder.with_name(f".removed-{day.isoformat()}-{uuid.uuid4().hex[:8]}")
        os.replace(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def num_rows(self, file: str) -> int:
        import pyarrow.parquet as pq

        return pq.read_metadata(file).num_rows

    def modified(self, table: str, days) -> dict[date, float]:
        """Modification time (epoch seconds) of each of ``days``' parts that exists."""
        out = {}
        for day in days:
            try:
                out[day] = self.day_part(table, day).stat().st_mtime
            except OSError:
                pass
        return out

    def attach(self, con) -> None:
        """Nothing to do: DuckDB reads local files itself."""

    def read_column(self, table: str, column: str) -> pl.Series:
        return pl.scan_parquet(self.glob(table)).select(column).collect().to_series()


class S3Parts:
    """The parts in an S3-compatible bucket under ``s3://bucket/prefix``: one object per day part."""

    def __init__(self, url: PartsUrl):
        self.url = url
        self._fs = None
        self._fsspec = None
        # key → pyarrow FileInfo of the parts this object last listed: DuckDB's reads through fsspec ask
        # for a file's size and mtime several times per open, each a HEAD request without this
        self._listed: dict = {}

    def __str__(self) -> str:
        return str(self.url)

    @property
    def fs(self):
        """pyarrow's S3 filesystem, made on first use (credentials from the environment, read then)."""
        if self._fs is None:
            import pyarrow.fs as pafs

            kw = {"scheme": self.url.scheme}
            if self.url.endpoint_override:
                kw["endpoint_override"] = self.url.endpoint_override
            if self.url.region:
                kw["region"] = self.url.region
            self._fs = pafs.S3FileSystem(**kw)
        return self._fs

    def _key(self, table: str, day: date) -> str:
        return f"{self.url.root}/{table}/date={day.isoformat()}/{PART_FILE}"

    def day_part(self, table: str, day: date) -> str:
        return "s3://" + self._key(table, day)

    def glob(self, table: str) -> str:
        return f"s3://{self.url.root}/{table}/date=*/{PART_FILE}"

    def has_parts(self, table: str) -> bool:
        return bool(self.list(table))

    def write(self, table: str, day: date, df: pl.DataFrame) -> None:
        """One object written by one upload (visible only once complete: no temp object, no rename).

        The parquet file is built in memory first, so a failure while building it touches nothing; the
        upload is one PUT (a multipart upload above pyarrow's part size, which S3 shows only once
        completed). Were an upload ever cut short, the object would lack the parquet footer, which
        sits at the end, so every read fails loudly rather than seeing part of a day. S3 gives an
        object's modification time in whole seconds, so a part rewritten within the second with the
        same size would keep its fingerprint and the next publish would miss it: the write is
        repeated after the second turns until the fingerprint differs from the object it replaced."""
        buffer = io.BytesIO()
        df.write_parquet(buffer)
        data = buffer.getvalue()
        key = self._key(table, day)
        self._listed.pop(key, None)
        before = self._fingerprint(key)
        for _ in range(5):
            with self.fs.open_output_stream(key) as out:
                out.write(data)
            after = self._fingerprint(key)
            if after is None or not after.startswith(f"s3:{len(data)}:"):
                raise OSError(f"parts {self}: {key} is not the {len(data)} bytes just written ({after})")
            if after != before:
                return
            time.sleep(1.0)
        raise OSError(f"parts {self}: {key} keeps the fingerprint of the object it replaced")

    def _fingerprint(self, key: str) -> str | None:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(key)
        return _fingerprint(info) if info.type == pafs.FileType.File else None

    def _files(self, table: str):
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(f"{self.url.root}/{table}", allow_not_found=True, recursive=True)
        base = f"{self.url.root}/{table}/"
        for key in [k for k in self._listed if k.startswith(base)]:
            del self._listed[key]
        for info in self.fs.get_file_info(selector):
            folder, _, name = info.path.rpartition("/")
            if info.type != pafs.FileType.File or name != PART_FILE:
                continue
            parent, _, day_dir = folder.rpartition("/")
            day = _day_of(day_dir) if day_dir.startswith("date=") else None
            if day is not None and parent == f"{self.url.root}/{table}":
                self._listed[info.path] = info
                yield day, info

    def days(self, table: str) -> set[date]:
        return {day for day, _ in self._files(table)}

    def list(self, table: str) -> dict[date, tuple[str, str]]:
        """Day → (``s3://`` URL, fingerprint: size and modification time, from one listing)."""
        return {day: ("s3://" + info.path, _fingerprint(info)) for day, info in self._files(table)}

    def remove(self, table: str, day: date) -> bool:
        """Delete the day's object (one delete: the day is there whole or gone). True if there was one."""
        key = self._key(table, day)
        self._listed.pop(key, None)
        if self._fingerprint(key) is None:
            return False
        self.fs.delete_file(key)
        return True

    def num_rows(self, file: str) -> int:
        import pyarrow.parquet as pq

        return pq.read_metadata(file.removeprefix("s3://"), filesystem=self.fs).num_rows

    def modified(self, table: str, days) -> dict[date, float]:
        """As ``LocalParts.modified``, from one listing (not a request per day)."""
        wanted = set(days)
        return {day: info.mtime_ns / 1e9 for day, info in self._files(table)
                if day in wanted and info.mtime_ns is not None}

    def attach(self, con) -> None:
        """Let ``read_parquet('s3://…')`` on ``con`` read through this filesystem (an fsspec wrapper of
        pyarrow's, registered on the connection; one registered ``s3`` filesystem per DuckDB database)."""
        if self._fsspec is None:
            self._fsspec = _listed_fsspec(self.fs, self._listed)
        names = set(con.list_filesystems())
        for name in ("s3", "s3a"):
            if name in names:
                con.unregister_filesystem(name)
        con.register_filesystem(self._fsspec)

    def read_column(self, table: str, column: str) -> pl.Series:
        import duckdb

        con = duckdb.connect()
        try:
            self.attach(con)
            files = [file for _, (file, _) in sorted(self.list(table).items())]
            arrow = con.sql(f'SELECT "{column}" FROM read_parquet(?, union_by_name = true)',
                            params=[files]).to_arrow_table()
            return pl.from_arrow(arrow).to_series()
        finally:
            con.close()


def _listed_fsspec(fs, listed: dict):
    """pyarrow's S3 filesystem as an fsspec one (for DuckDB), answering a listed part's size and mtime from
    its listing instead of a HEAD request each time (DuckDB asks several times per file it opens).

    A part replaced after it was listed may then be read with the listed size: the read fails (the footer
    is not where the size says) or, for the same size, reads the new object whole; the publish records
    the listed fingerprint either way, so the next publish loads the day again, as with local parts."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    class ListedS3(ArrowFSWrapper):
        def info(self, path, **kwargs):
            hit = listed.get(self._strip_protocol(path))
            return self._make_entry(hit) if hit is not None else super().info(path, **kwargs)

        def modified(self, path):
            hit = listed.get(self._strip_protocol(path))
            return hit.mtime if hit is not None else super().modified(path)

    return ListedS3(fs)


def _fingerprint(info) -> str:
    return f"s3:{info.size}:{info.mtime_ns}"


def part_store(local_root: Path, parts_url: str | None) -> LocalParts | S3Parts:
    """The parts of a store: ``parts_url`` (checked) when given, else ``local_root`` (``<store>.parts``)."""
    if parts_url is None or not str(parts_url).strip():
        return LocalParts(local_root)
    return S3Parts(parse_parts_url(parts_url))
