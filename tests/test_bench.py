"""
The benchmark (bench/run.py) in its smoke size: one run against direct
loopback and socksrelay, as a subprocess, checked through the files it
writes. It takes seconds; it asserts that every measure ran and produced a
figure, never how fast anything was (that depends on the machine's load).
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "bench", "run.py")

# Every measure of issue 9, by its key in latest.json.
MEASURES = [
    "download_mbs", "upload_mbs",
    "download8_mbs", "upload8_mbs", "download64_mbs", "upload64_mbs",
    "cps", "hs_p50_us", "hs_p99_us",
    "cps_auth", "hs_auth_p50_us", "hs_auth_p99_us",
    "rtt_p50_us", "rtt_p99_us",
    "idle_bytes", "idle_pss_bytes",
    "udp_dps",
    "cpu_s_per_gb",
]
# What a direct connection has no figure for: there is no proxy to measure
# or to authenticate to.
DIRECT_NA = {"idle_bytes", "idle_pss_bytes", "cpu_s_per_gb",
             "cps_auth", "hs_auth_p50_us", "hs_auth_p99_us"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, RUN, "--smoke", "--no-install", "--peers", "direct,socksrelay",
         "--out", str(out)],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(out / "latest.json") as f:
        data = json.load(f)
    with open(out / "latest.md") as f:
        md = f.read()
    return data, md, proc.stderr


def test_every_measure_has_a_positive_figure(smoke):
    """
    Each measure (throughput with 1, 8 and 64 streams each way, connections
    per second with and without RFC 1929 auth and their handshake latency,
    round trip, idle memory, UDP ASSOCIATE echo, CPU per GB) ran to the end
    against socksrelay and against direct loopback, and gave a positive
    number, except where direct has no proxy to measure.
    """
    data, _, stderr = smoke
    results = data["results"]
    assert set(results) == {"direct", "socksrelay"}
    for peer in ("direct", "socksrelay"):
        for key in MEASURES:
            value = results[peer].get(key)
            if peer == "direct" and key in DIRECT_NA:
                assert value == "n/a (no proxy)", (peer, key, value)
                continue
            assert isinstance(value, (int, float)) and value > 0, (peer, key, value, stderr)


def test_udp_datagrams_are_accounted_for(smoke):
    """
    The UDP echo went through socksrelay's UDP ASSOCIATE relay (not straight
    to the target): datagrams came back, the loss count is a number, and
    socksrelay's raw record shows the association carried them.
    """
    data, _, _ = smoke
    for peer in ("direct", "socksrelay"):
        assert isinstance(data["results"][peer]["udp_lost"], int)
        (run,) = data["raw"][peer]["udp"]
        assert run["received"] > 0
        assert run["sent"] >= run["received"] + run["lost"]


def test_markdown_table_has_socksrelay_column(smoke):
    """
    latest.md holds the table: a header row with the direct and socksrelay
    columns, one row per measure (the UDP and auth rows included), and the
    headroom lines comparing direct with the best proxy.
    """
    _, md, _ = smoke
    lines = md.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:3] == ["measure", "direct", "socksrelay"]
    assert any(line.startswith("| connections/s with auth") for line in lines)
    assert any(line.startswith("| UDP ASSOCIATE echo datagrams/s") for line in lines)
    assert any(line.startswith("| download MB/s (64 streams") for line in lines)
    assert "Headroom" in md


def test_headroom_recorded(smoke):
    """
    The JSON records, per measure, direct loopback's figure against the
    best proxy's (here the only proxy, socksrelay), so a reader can see
    whether the client could have been the bottleneck.
    """
    data, _, _ = smoke
    headroom = data["meta"]["headroom"]
    for key in ("download_mbs", "upload64_mbs", "cps", "rtt_p50_us", "udp_dps"):
        assert headroom[key]["best_proxy"] == "socksrelay"
        assert headroom[key]["ratio"] > 0
