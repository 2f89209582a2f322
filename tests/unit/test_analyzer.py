"""Analyzer flow records against the frames that were actually sent (built with scapy)."""

from __future__ import annotations

import json
import random
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from nfv.datapath.function import Side, Verdict
from nfv.functions.analyzer import CLOSE_LINGER, Analyzer
from testing.fuzzing import mutate

C, S = "10.0.0.1", "10.0.0.2"
CMAC, SMAC = "00:00:00:00:00:01", "00:00:00:00:00:02"


def feed(an: Analyzer, pkt: Packet | bytes, now: float, side: Side = Side.INGRESS) -> int:
    raw = bytes(pkt)
    verdict, length = an.process(memoryview(bytearray(raw)), len(raw), side, now)
    assert verdict == Verdict.FORWARD and length == len(raw)
    return len(raw)


def c2s(flags: str, load: bytes = b"", seq: int = 0, **kw: Any) -> Packet:
    pkt = (
        Ether(src=CMAC, dst=SMAC)
        / IP(src=C, dst=S, **kw)
        / TCP(sport=40000, dport=80, flags=flags, seq=seq)
    )
    return pkt / Raw(load) if load else pkt


def s2c(flags: str, load: bytes = b"", seq: int = 0) -> Packet:
    pkt = (
        Ether(src=SMAC, dst=CMAC)
        / IP(src=S, dst=C)
        / TCP(sport=80, dport=40000, flags=flags, seq=seq)
    )
    return pkt / Raw(load) if load else pkt


def only_record(an: Analyzer) -> dict[str, Any]:
    assert len(an.recent) == 1, list(an.recent)
    return an.recent[0]


def test_tcp_connection_counts_flags_history_and_fin_end(tmp_path: Path) -> None:
    export = tmp_path / "flows.jsonl"
    an = Analyzer({"idle_timeout": "15s", "active_timeout": "60s", "export_path": str(export)})
    ci, si = 1000, 0xFFFFFF00  # the server's sequence numbers wrap around during the flow
    script = [
        (c2s("S", seq=ci), 0),
        (s2c("SA", seq=si), 1),
        (c2s("A", seq=ci + 1), 0),
        (c2s("PA", b"x" * 100, seq=ci + 1), 0),
        (s2c("PA", b"y" * 1000, seq=si + 1), 1),
        (s2c("PA", b"z" * 500, seq=(si + 1001) & 0xFFFFFFFF), 1),
        (c2s("A", seq=ci + 101), 0),
        (c2s("FA", seq=ci + 101), 0),
        (s2c("FA", seq=(si + 1501) & 0xFFFFFFFF), 1),
        (c2s("A", seq=ci + 102), 0),
    ]
    sent = {0: [0, 0, 0], 1: [0, 0, 0]}  # pkts, l2 bytes, ip bytes
    t = 100.0
    for pkt, d in script:
        n = feed(an, pkt, t)
        sent[d][0] += 1
        sent[d][1] += n
        sent[d][2] += len(pkt[IP])
        t += 0.01
    an.tick(t)
    assert not an.recent, "the flow must linger for its last ACKs"
    an.tick(t + CLOSE_LINGER + 0.2)
    rec = only_record(an)
    assert (rec["id.orig_h"], rec["id.orig_p"], rec["id.resp_h"], rec["id.resp_p"]) == (
        C,
        40000,
        S,
        80,
    )
    assert rec["proto"] == "tcp"
    assert [rec["orig_pkts"], rec["orig_l2_bytes"], rec["orig_ip_bytes"]] == sent[0]
    assert [rec["resp_pkts"], rec["resp_l2_bytes"], rec["resp_ip_bytes"]] == sent[1]
    assert (rec["orig_bytes"], rec["resp_bytes"]) == (100, 1500)
    assert rec["history"] == "ShADdFf"
    assert rec["conn_state"] == "SF"
    assert rec["end_reason"] == "fin"
    assert rec["orig_flags"] == rec["resp_flags"] == "FSP."
    assert rec["ts"] == pytest.approx(100.0 + an.epoch_offset)
    assert rec["duration"] == pytest.approx(0.09)
    lines = export.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [rec]
    assert an.counters()["flows_exported"]["fin"] == 1
    an.close()


def test_tcp_bytes_are_sequence_space_so_retransmissions_count_once() -> None:
    """Zeek's orig/resp_bytes: a retransmitted segment adds nothing, a segment the capture
    missed counts once the sender has moved past it, and a connection seen mid-stream counts
    from its first segment."""
    an = Analyzer({})
    si = 5000
    feed(an, c2s("S", seq=1), 1.0)
    feed(an, s2c("SA", seq=si), 1.0)
    for seq, size in [
        (si + 1, 1000),  # 1000
        (si + 1, 1000),  # retransmitted whole: 0
        (si + 1001, 500),  # 500
        (si + 1001, 1000),  # overlaps the last 500 sent: 500 new
        (si + 2501, 1000),  # skips 2001..2500 (lost before us): 500 + 1000
        (si + 1, 3500),  # everything again, in one segment: 0
        (si + 2001, 500),  # the lost segment, retransmitted: already counted
        (si + 3001, 0),  # a pure ACK: nothing
    ]:
        feed(an, s2c("PA" if size else "A", b"d" * size, seq=seq), 1.1)
    feed(an, c2s("R", seq=2), 1.2)
    an.tick(1.2 + CLOSE_LINGER + 0.1)
    rec = only_record(an)
    assert rec["resp_bytes"] == 3500 and rec["resp_pkts"] == 9

    mid = Analyzer({})
    feed(mid, s2c("PA", b"m" * 700, seq=0xFFFFFF00), 2.0)
    feed(mid, s2c("PA", b"m" * 700, seq=0xFFFFFF00), 2.1)
    feed(mid, s2c("PA", b"m" * 300, seq=(0xFFFFFF00 + 700) & 0xFFFFFFFF), 2.2)
    mid.tick(2.2 + 16.0)
    assert only_record(mid)["orig_bytes"] == 1000


def test_originator_is_the_first_sender() -> None:
    an = Analyzer({})
    feed(an, s2c("SA"), 1.0)
    feed(an, c2s("A"), 1.1)
    an.tick(1.0 + 15.0 + 0.1)
    rec = only_record(an)
    assert rec["id.orig_h"] == S and rec["id.orig_p"] == 80
    assert rec["history"] == "Ha"
    assert rec["end_reason"] == "idle"


def test_rejected_connection_ends_by_rst() -> None:
    an = Analyzer({})
    feed(an, c2s("S"), 5.0)
    feed(an, s2c("RA"), 5.001)
    an.tick(5.001 + CLOSE_LINGER + 0.01)
    rec = only_record(an)
    assert rec["conn_state"] == "REJ"
    assert rec["end_reason"] == "rst"
    assert rec["history"] == "Sr"


def test_idle_timeout_udp_and_not_before() -> None:
    an = Analyzer({"idle_timeout": 2, "active_timeout": 100})
    q = Ether() / IP(src=C, dst=S) / UDP(sport=5353, dport=53) / Raw(b"q" * 30)
    r = Ether() / IP(src=S, dst=C) / UDP(sport=53, dport=5353) / Raw(b"r" * 90)
    feed(an, q, 10.0)
    feed(an, r, 10.5)
    an.tick(12.4)
    assert not an.recent
    an.tick(12.6)
    rec = only_record(an)
    assert rec["end_reason"] == "idle" and rec["conn_state"] == "SF"
    assert (rec["orig_pkts"], rec["resp_pkts"]) == (1, 1)
    assert (rec["orig_bytes"], rec["resp_bytes"]) == (30, 90)
    assert rec["history"] == "Dd"
    assert an.counters()["flows_active"] == 0


def test_active_timeout_splits_a_long_flow_into_segments() -> None:
    an = Analyzer({"idle_timeout": 5, "active_timeout": 10})
    pkt = Ether() / IP(src=C, dst=S) / UDP(sport=1, dport=2) / Raw(b"a")
    t = 0.0
    while t < 25.0:
        an.tick(t)
        feed(an, pkt, t)
        t += 0.5
    records = list(an.recent)
    assert [r["end_reason"] for r in records] == ["active", "active"]
    assert [r["segment"] for r in records] == [0, 1]
    assert all(r["orig_pkts"] == 20 for r in records)
    an.close()
    last = an.recent[-1]
    assert last["end_reason"] == "shutdown" and last["orig_pkts"] == 10
    assert sum(r["orig_pkts"] for r in an.recent) == 50


def test_port_reuse_after_close_starts_a_new_record() -> None:
    an = Analyzer({})
    for pkt in (c2s("S"), s2c("SA"), c2s("A"), c2s("RA")):
        feed(an, pkt, 1.0)
    feed(an, c2s("S"), 1.2)  # same 5-tuple, new connection, before the linger ends
    rec = only_record(an)
    assert rec["end_reason"] == "rst" and rec["conn_state"] == "RSTO"
    assert an.counters()["flows_active"] == 1


def test_icmp_ipv6_arp_and_dscp_accounting() -> None:
    an = Analyzer({})
    ping = Ether() / IP(src=C, dst=S, tos=46 << 2) / ICMP(type=8, id=7) / Raw(b"p" * 56)
    pong = Ether() / IP(src=S, dst=C, tos=46 << 2) / ICMP(type=0, id=7) / Raw(b"p" * 56)
    n = feed(an, ping, 1.0) + feed(an, pong, 1.1)
    feed(an, Ether() / IPv6(src="fe80::1", dst="fe80::2") / UDP(sport=1, dport=2), 1.2)
    feed(an, Ether() / ARP(psrc=C, pdst=S), 1.3)
    c = an.counters()
    assert c["dscp"]["EF"] == {"packets": 2, "bytes": n}
    assert c["protocols"]["icmp"]["packets"] == 2 and c["protocols"]["udp"]["packets"] == 1
    assert c["non_ip"] == 1 and c["ethertypes"] == {"0x0806": 1}
    an.close()
    by_proto = {r["proto"]: r for r in an.recent}
    assert by_proto["icmp"]["orig_pkts"] == 1 and by_proto["icmp"]["resp_pkts"] == 1
    assert by_proto["icmp"]["id.orig_p"] == 8  # Zeek: ICMP type in the port field
    assert by_proto["icmp"]["dscp_class"] == "EF"
    assert by_proto["udp"]["id.orig_h"] == "fe80::1"


def test_dscp_rates_top_talkers_and_prometheus() -> None:
    an = Analyzer({})
    big = Ether() / IP(src=C, dst=S, tos=10 << 2) / UDP(sport=1, dport=2) / Raw(b"x" * 958)
    small = Ether() / IP(src=S, dst=C) / UDP(sport=2, dport=1) / Raw(b"y" * 10)
    an.tick(0.0)
    for i in range(100):
        feed(an, big, i / 100)
        feed(an, small, i / 100)
    an.tick(1.0)
    c = an.counters()
    assert c["dscp_rates"]["AF11"]["pps"] == pytest.approx(100)
    assert c["dscp_rates"]["AF11"]["bps"] == pytest.approx(100 * len(big) * 8)
    assert c["top_talkers"][0] == {"host": C, "bytes": 100 * len(big)}
    assert c["top_talkers"][1]["host"] == S
    text = generate_latest(an.registry).decode()
    assert 'nfv_analyzer_dscp_bytes_total{dscp="AF11"} 100000.0' in text
    assert "nfv_analyzer_flows_active 1.0" in text
    assert f'nfv_analyzer_top_talker_bytes{{host="{C}"}}' in text


def test_metrics_served_over_http() -> None:
    an = Analyzer({"metrics_port": 0})
    try:
        feed(an, c2s("S"), 1.0)
        an.tick(2.0)
        url = f"http://127.0.0.1:{an.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read().decode()
        assert 'nfv_analyzer_frames_total{outcome="tracked"} 1.0' in body
    finally:
        an.close()


def test_flow_table_limit_counts_untracked() -> None:
    an = Analyzer({"max_flows": 2})
    for port in range(5):
        feed(an, Ether() / IP(src=C, dst=S) / UDP(sport=port + 1, dport=9), 1.0)
    c = an.counters()
    assert (c["tracked"], c["untracked"], c["flows_active"]) == (2, 3, 2)




def fuzz_templates() -> list[bytes]:
    return [
        bytes(p)
        for p in (
            c2s("S"),
            s2c("SA", b"x" * 20),
            c2s("FPA", b"y" * 5),
            Ether() / IP(src=C, dst=S, flags="MF") / UDP(sport=1, dport=2) / Raw(b"z" * 40),
            Ether() / IP(src=C, dst=S, frag=3) / Raw(b"z" * 40),
            Ether() / IP(src=C, dst=S) / ICMP(type=3) / IP(src=S, dst=C) / UDP(),
            Ether() / IPv6(src="::1", dst="::2") / TCP(),
            Ether(type=0x8100) / b"\x00\x05\x08\x00" / IP(src=C, dst=S) / TCP(),
            Ether() / ARP(),
        )
    ]


def test_fuzz_never_raises_and_accounts_for_every_frame() -> None:
    an = Analyzer({"idle_timeout": 1, "active_timeout": 3, "max_flows": 5000})
    rng = random.Random(1234)
    templates = fuzz_templates()
    frames = 100_000
    for i in range(frames):
        raw = mutate(rng, templates)
        buf = bytearray(raw) + bytearray(rng.randrange(0, 4))  # buffers may be longer
        verdict, length = an.process(memoryview(buf), len(raw), Side(i & 1), i * 1e-4)
        assert verdict == Verdict.FORWARD and length == len(raw)
        if i % 1000 == 0:
            an.tick(i * 1e-4)
    c = an.counters()
    assert c["frames"] == frames
    assert c["tracked"] + c["untracked"] + c["non_ip"] + c["malformed"] == frames
    assert c["malformed"] > 10_000 and c["tracked"] > 10_000
    json.dumps(c)
    an.close()
    assert an.counters()["flows_active"] == 0
