"""Packets lost while policy changes reroute a stream, and while the controller restarts
(root, Mininet, Open vSwitch).

A ring of 4 switches, routing without ECMP or fast-failover groups, a 1000 pps UDP stream
h1 -> h2 (neighbours). `sdnctl policy apply` then alternates between two policies: plain,
and one that makes the s1-s2 link heavy, which moves the stream to s1-s4-s3-s2 and back.
On the way there s4 used to reach s2 through s1: if s1 takes its change before s4 has,
s4 sends the stream straight back (a transient loop). Measured with the ordered rounds of
`sdn.reconcile.ordering`, then with every switch sent its whole difference at once (a controller
process started with `--unordered-updates`; nothing else differs); each also
with s4's OpenFlow connection behind a relay that delays it 20 ms each way, as a remote
or busy switch would be. (Here every bridge lives in one ovs-vswitchd, which takes a
batch for all of them almost at once, so without the relay the unordered window is
microseconds wide. With fast-failover protection on, s1's U-turn rule happens to send
the looping packets on over s1-s2, so the unordered loss shows without it.)

Then, with a 1000 pps stream h1 -> h3 on a fresh network, the controller is killed
(SIGKILL) and started again on the same ports and state directory.

`python -m bench update_loss` prints the figures; `run()` returns them as a dict. The
sender and receiver are `bench.failover`'s, run inside the Mininet hosts.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

RATE_PPS = 1000
CHANGES = 8  # policy applies during one stream, alternating detour and back
CHANGE_EVERY = 0.6  # seconds
LEAD_IN = 1.0  # seconds of stream before the first change and after the last
RESTART_SECONDS = 10.0
SLOW_SWITCH = "s4"
SLOW_DELAY = 0.02  # seconds each way on the slow switch's control channel
REPO = Path(__file__).resolve().parent.parent

PLAIN = "version: 1\nrouting: {metric: hops, ecmp: false, protection: none}\n"
DETOUR = PLAIN + "topology:\n  links:\n    - {between: [s1, s2], weight: 10}\n"

def _launcher(workdir: Path) -> Path:
    """An `sdnctl` stand-in whose `controller run` starts a controller that sends every
    switch its whole difference at once."""
    script = workdir / "sdnctl-unordered"
    script.write_text(f"#!/bin/sh\nshift 2\ncd {REPO}\n"
                      f"exec {sys.executable} -m sdn.northbound.main \"$@\" --unordered-updates\n")
    script.chmod(0o755)
    return script


@contextlib.contextmanager
def controller(workdir: Path, ordered: bool = True) -> Iterator:
    """A running controller (`testing.harness.Controller`), ordered or not."""
    from testing import harness

    ctl = harness.Controller(workdir / ("ordered" if ordered else "unordered"))
    if ordered:
        ctl.start()
    else:
        with mock.patch.object(harness, "SDNCTL", _launcher(workdir)):
            ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()


class DelayProxy:
    """Relays TCP connections to `target_port` on loopback, holding every chunk `delay`
    seconds in each direction: a switch whose control channel is slow (far away or
    busy), so that switches take an update at visibly different times."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                switch, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for src, dst in ((switch, upstream), (upstream, switch)):
                chunks: queue.Queue = queue.Queue()
                threading.Thread(target=self._read, args=(src, chunks), daemon=True).start()
                threading.Thread(target=self._write, args=(dst, chunks), daemon=True).start()

    def _read(self, src: socket.socket, chunks: queue.Queue) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            chunks.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def _write(self, dst: socket.socket, chunks: queue.Queue) -> None:
        while True:
            due, data = chunks.get()
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()


@contextlib.contextmanager
def slow_switch(net, ctl, name: str = SLOW_SWITCH, delay: float = SLOW_DELAY) -> Iterator:
    """Move one switch's OpenFlow connection behind a `DelayProxy`, wait until the
    controller has it back (warm: it keeps its rules) and the network has settled."""
    from testing.harness import ping, wait_until

    proxy = DelayProxy(ctl.ofp_port, delay)
    try:
        target = f"tcp:127.0.0.1:{proxy.port}"
        net.get(name).cmd(f"ovs-vsctl set-controller {name} {target}")
        wait_until(lambda: "true" in net.get(name).cmd(
            f"ovs-vsctl --bare --columns=is_connected find controller 'target=\"{target}\"'"),
            15, what="the switch to connect through the relay")
        ctl.wait_topology(4, 4)
        time.sleep(4)  # the switch's warm-restart grace, then the reconciling sync
        assert ping(net.get("h1"), net.get("h2").IP(), count=3).received == 3
        yield proxy
    finally:
        proxy.close()


@contextlib.contextmanager
def _stream(net, src: str, dst: str, seconds: float, workdir: Path, tag: str,
            rate: int = RATE_PPS) -> Iterator[dict]:
    """A sequence-numbered UDP stream src -> dst for `seconds`; the dict yielded is filled
    with its figures when the block ends."""
    from testing.harness import wait_until

    h_src, h_dst = net.get(src), net.get(dst)
    out = workdir / f"{tag}.json"
    receiver = h_dst.popen([sys.executable, "-m", "bench.failover", "recv",
                            str(seconds + 1.5), str(out)], cwd=str(REPO))
    figures: dict = {}
    procs = [receiver]
    try:
        wait_until(Path(str(out) + ".ready").exists, 15, interval=0.05, what="the receiver")
        sender = h_src.popen([sys.executable, "-m", "bench.failover", "send", h_dst.IP(),
                              str(rate), str(seconds)], stdout=subprocess.PIPE,
                             cwd=str(REPO))
        procs.append(sender)
        yield figures
        stdout, _ = sender.communicate(timeout=seconds + 30)
        receiver.wait(timeout=30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    got = json.loads(out.read_text())
    sent = json.loads(stdout.decode().strip().splitlines()[-1])["sent"]
    figures.update(sent=sent, lost=sent - got["unique"],
                   duplicates=got["received"] - got["unique"], reordered=got["reordered"],
                   longest_gap_ms=got["longest_gap_ms"])


def reroutes(net, ctl, workdir: Path, tag: str, changes: int = CHANGES,
             rate: int = RATE_PPS) -> dict:
    """Packets of a stream h1 -> h2 lost while `changes` policy applies move it between
    s1-s2 and s1-s4-s3-s2 (checked: s1 sends it to s4 after the first)."""
    from bench.failover import _link_in_use
    from testing.harness import ping

    plain, detour = workdir / "plain.yaml", workdir / "detour.yaml"
    plain.write_text(PLAIN)
    detour.write_text(DETOUR)
    ctl.apply(plain)
    assert ping(net.get("h1"), net.get("h2").IP(), count=3).received == 3
    seconds = 2 * LEAD_IN + changes * CHANGE_EVERY
    applies = []
    with _stream(net, "h1", "h2", seconds, workdir, tag, rate) as figures:
        time.sleep(LEAD_IN)
        for i in range(changes):
            started = time.monotonic()
            ctl.apply(detour if i % 2 == 0 else plain)
            applies.append(time.monotonic() - started)
            if i == 0:
                via = _link_in_use(net, "s1", ["s2", "s4"], sample=0.2)
            time.sleep(max(0.0, CHANGE_EVERY - (time.monotonic() - started)))
    if changes % 2:
        ctl.apply(plain)
    if changes and via != "s4":
        raise RuntimeError(f"the detour did not move the stream (s1 sends it to {via})")
    return {**figures, "rate_pps": rate, "changes": changes,
            "apply_ms_max": round(max(applies, default=0.0) * 1000, 1)}


def restart(net, ctl, workdir: Path) -> dict:
    """Packets of a 1000 pps stream h1 -> h3 lost while the controller is killed and
    started again (warm restart: the switches keep their rules and it reconciles)."""
    from testing.harness import ping

    assert ping(net.get("h1"), net.get("h3").IP(), count=3).received == 3
    with _stream(net, "h1", "h3", RESTART_SECONDS, workdir, "restart") as figures:
        time.sleep(LEAD_IN)
        started = time.monotonic()
        ctl.stop(signal.SIGKILL)
        ctl.start()
        ctl.wait_topology(4, 4)
        down = time.monotonic() - started
    return {**figures, "controller_away_s": round(down, 2)}


def measure_reroutes(ordered: bool, changes: int = CHANGES) -> dict:
    """One network and controller: the reroute figures (used by the integration test)."""
    from testing.harness import network
    from topologies.sdn_topos import RingTopo

    with tempfile.TemporaryDirectory(prefix="bench-update-loss-") as tmp:
        workdir = Path(tmp)
        with controller(workdir, ordered) as ctl, network(RingTopo(n=4), ctl) as net:
            return reroutes(net, ctl, workdir, "ordered" if ordered else "unordered",
                            changes)


def run() -> dict:
    from testing.harness import network
    from topologies.sdn_topos import RingTopo

    figures = {}
    with tempfile.TemporaryDirectory(prefix="bench-update-loss-") as tmp:
        workdir = Path(tmp)
        for ordered in (True, False):
            name = "reroute_ordered" if ordered else "reroute_unordered"
            with controller(workdir, ordered) as ctl, network(RingTopo(n=4), ctl) as net:
                figures[name] = reroutes(net, ctl, workdir, name)
                with slow_switch(net, ctl):
                    figures[f"{name}_slow_{SLOW_SWITCH}"] = reroutes(
                        net, ctl, workdir, f"{name}-slow")
            if ordered:
                with controller(workdir / "restart") as ctl, \
                        network(RingTopo(n=4), ctl) as net:
                    figures["restart"] = restart(net, ctl, workdir)
    for name, f in figures.items():
        what = (f"{f['changes']} reroutes" if "changes" in f
                else f"kill -9 and restart ({f['controller_away_s']} s)")
        if name.endswith(f"_slow_{SLOW_SWITCH}"):
            what += f" ({SLOW_SWITCH}'s control channel {SLOW_DELAY * 1000:.0f} ms each way)"
        print(f"{name}: {what} in a {RATE_PPS} pps stream: lost {f['lost']} of {f['sent']}, "
              f"duplicates {f['duplicates']}, reordered {f['reordered']}, "
              f"longest gap {f['longest_gap_ms']} ms")
    return figures


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("needs root (Mininet)")
    print(json.dumps(run(), indent=2))
