"""End to end through the real UI server: dagster-webserver on loopback, GraphQL, and a screenshot.

The server runs in its own process group and is stopped by group id (``dagster dev`` has been
seen ignoring SIGTERM for 90 s and leaving children behind, so the webserver is started
directly). In-process ``materialize`` writes to the same DAGSTER_HOME the server reads.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.webserver
QUESTION = "email_early_vs_late"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import dagster as dg

    from data_fixtures.generator import generate
    from pipelines.runner import run_pipeline

    root = tmp_path_factory.mktemp("e2e")
    raw, store, home = root / "raw", root / "store.duckdb", root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    generate(raw, n_conversations=12_000, seed=5)
    env = {**os.environ, "DAGSTER_HOME": str(home), "CONVOCAUSAL_RAW": str(raw), "CONVOCAUSAL_STORE": str(store)}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_pipeline(raw, store, instance=instance)
    port = _free_port()
    log = open(root / "webserver.log", "wb")  # noqa: SIM115 - the server writes to it until `finally` closes it
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-m", "pipelines.definitions"],
        cwd=Path(__file__).resolve().parents[1], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError((root / "webserver.log").read_text()[-2000:])
                time.sleep(1)
        else:
            raise TimeoutError("dagster-webserver did not answer within 120 s")
        yield {"port": port, "root": root}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def test_graphql_shows_graph_and_estimate_metadata(served):
    port = served["port"]
    nodes = _graphql(port, "{ assetNodes { assetKey { path } } }")["data"]["assetNodes"]
    keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
    assert {"signals_day", "analysis_store", "question_estimate", "question_report"} <= keys
    query = """
    query($partition: String!) {
      assetOrError(assetKey: {path: ["question_estimate"]}) {
        ... on Asset { assetMaterializations(partitions: [$partition], limit: 1) {
            partition
            metadataEntries { label ... on FloatMetadataEntry { floatValue } ... on TextMetadataEntry { text } }
        } }
      }
    }"""
    mats = _graphql(port, query, {"partition": QUESTION})["data"]["assetOrError"]["assetMaterializations"]
    assert mats and mats[0]["partition"] == QUESTION
    meta = {e["label"]: e.get("floatValue", e.get("text")) for e in mats[0]["metadataEntries"]}
    assert meta["method"] == "propensity_matching"
    assert meta["ci_low"] <= meta["estimate"] <= meta["ci_high"]


def test_browser_screenshot_of_estimate_page(served):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium is not installed on this machine (.ci/run installs Debian's chromium)")
    shot = served["root"] / "estimate.png"
    url = f"http://127.0.0.1:{served['port']}/assets/question_estimate?partition={QUESTION}"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={served['root'] / 'chrome'}", "--window-size=1400,1000",
         "--virtual-time-budget=20000", f"--screenshot={shot}", url],
        check=True, timeout=120, capture_output=True,
    )
    assert shot.stat().st_size > 20_000, "screenshot is too small to show the rendered page"
    out = Path(os.environ.get("CONVOCAUSAL_SCREENSHOT_DIR", served["root"]))
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, out / "question_estimate.png")
