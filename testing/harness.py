"""Integration-test harness: the controller as a process, Mininet networks, captures.

Everything here cleans up after itself by pid and by name, also when a test fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import requests
from mininet.node import RemoteController

REPO = Path(__file__).resolve().parent.parent
SDNCTL = Path(sys.executable).parent / "sdnctl"
STOP_TIMEOUT = 2.0  # a controller exits this soon after SIGTERM (README, "Security")
MININET_LOCK = Path("/run/lock/sdn-nfv-mininet.lock")
ERROR_PATTERN = re.compile(r" ERROR |Traceback|OpenFlow error")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Controller:
    """`sdnctl controller run` as a child process on free ports."""

    state_dir: Path
    api_host: str = "127.0.0.1"
    ofp_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()  # more `sdnctl controller run` options

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "controller.log"

    def start(self) -> Controller:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.state_dir / "stdout.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [str(SDNCTL), "controller", "run", "--ofp-host", "127.0.0.1",
             "--ofp-port", str(self.ofp_port), "--api", f"{self.api_host}:{self.api_port}",
             "--state-dir", str(self.state_dir), *self.extra_args],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        out.close()
        wait_until(self._healthy, 20, what="controller API")
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"controller exited with {self.proc.returncode}:\n"
                               + (self.state_dir / "stdout.log").read_text()[-3000:])
        try:
            requests.get(f"http://{self.api}/v1/health", timeout=1)
        except requests.ConnectionError:
            return False
        return True

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the controller with `sig`; one that has not exited STOP_TIMEOUT seconds
        after SIGTERM or SIGINT is killed, and that is an error."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"controller ignored signal {sig} for {STOP_TIMEOUT}s") from None

    def sdnctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """The CLI, pointed at this controller."""
        return subprocess.run([str(SDNCTL), *args, "--api", self.api], capture_output=True,
                              text=True, timeout=timeout)

    def apply(self, policy: Path) -> str:
        """`sdnctl policy apply -f POLICY`; raises with the CLI's message when it fails."""
        result = self.sdnctl("policy", "apply", "-f", str(policy))
        if result.returncode:
            raise RuntimeError(f"policy apply failed:\n{result.stderr}")
        return result.stdout

    def get(self, path: str, **params) -> dict:
        resp = requests.get(f"http://{self.api}{path}", params=params, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def metric(self, name: str) -> float:
        text = requests.get(f"http://{self.api}/metrics", timeout=10).text
        match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    def wait_topology(self, switches: int, links: int, timeout: float = 60) -> dict:
        def complete():
            topo = self.get("/v1/topology")
            ok = len(topo["switches"]) == switches and len(topo["links"]) == links
            return topo if ok else None
        return wait_until(complete, timeout, what=f"{switches} switches and {links} links")

    def errors(self) -> list[str]:
        if not self.log_file.exists():
            return []
        return [line for line in self.log_file.read_text().splitlines()
                if ERROR_PATTERN.search(line)]


class ListeningController(RemoteController):
    """Mininet checks a remote controller with telnet through a shell and now and then
    chokes on telnet's binary output; a plain connect says the same."""

    def checkListening(self) -> None:
        with socket.create_connection((self.ip, self.port), timeout=5):
            pass


class LaterController(RemoteController):
    """A controller the switches are pointed at before it runs (they keep retrying)."""

    def checkListening(self) -> None:
        pass


@contextlib.contextmanager
def mininet_lock() -> Iterator[None]:
    """Mininet names (s1, h1-eth0) are global: one network on the machine at a time."""
    MININET_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(MININET_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def datapath() -> str:
    """Mininet's name for the datapath this machine has: the kernel one or userspace."""
    from nfv.host.ovsdb import detect_datapath

    return "kernel" if detect_datapath() == "system" else "user"


@dataclass(frozen=True)
class SwitchTls:
    """What Open vSwitch needs to reach a controller over TLS (`ovs-vsctl set-ssl`)."""

    private_key: Path
    certificate: Path
    controller_ca: Path


@contextlib.contextmanager
def network(topo, controller: Controller, wait: bool = True,
            tls: SwitchTls | None = None, others: tuple[Controller, ...] = ()) -> Iterator:
    """A started Mininet network on `controller`, stopped and removed afterwards; with
    `tls`, its switches connect over TLS (Open vSwitch's SSL settings are global, so they
    are set under the lock and removed afterwards). `controller` may start later: then
    pass wait=False. Switches connect to `others` too (a cluster)."""
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import OVSSwitch

    setLogLevel("error")
    switch = partial(OVSSwitch, datapath=datapath(), protocols="OpenFlow13",
                     failMode="secure")
    with mininet_lock():
        net = Mininet(topo=topo, switch=switch, controller=None, autoSetMacs=True,
                      waitConnected=False, build=False)
        for index, each in enumerate((controller, *others)):
            kind = ListeningController if each.proc else LaterController
            net.addController(kind(f"c{index}", ip="127.0.0.1", port=each.ofp_port,
                                   protocol="ssl" if tls else "tcp"))
        if tls:
            subprocess.run(["ovs-vsctl", "set-ssl", str(tls.private_key), str(tls.certificate),
                            str(tls.controller_ca)], check=True)
        try:
            net.build()
            net.start()
            if wait:
                n_links = sum(1 for a, b in topo.links()
                              if topo.isSwitch(a) and topo.isSwitch(b))
                controller.wait_topology(len(net.switches), n_links)
            yield net
        finally:
            net.stop()
            if tls:
                subprocess.run(["ovs-vsctl", "del-ssl"], check=True)


@dataclass
class PingResult:
    sent: int
    received: int
    duplicates: int
    rtts_ms: list[float]


def ping(src, dst_ip: str, count: int = 1, timeout: float = 2, interval: float = 0.2
         ) -> PingResult:
    out = src.cmd(f"ping -n -c {count} -i {interval} -W {timeout} {dst_ip}")
    stats = re.search(r"(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?", out)
    if not stats:
        raise AssertionError(f"unparsable ping output:\n{out}")
    rtts = [float(x) for x in re.findall(r"time=([0-9.]+) ms", out)]
    return PingResult(int(stats.group(1)), int(stats.group(2)), int(stats.group(3) or 0), rtts)


def unreachable(net, pairs: list[tuple[int, int]], batch: int = 50) -> list[tuple[int, int]]:
    """The host pairs (a, b: hA pings hB) whose one ping (1 s) got no answer; `batch`
    pings at a time, so hundreds of pairs take seconds."""
    failed = []
    for start in range(0, len(pairs), batch):
        procs = [(pair, net.get(f"h{pair[0]}").popen(
            ["ping", "-n", "-q", "-c", "1", "-W", "1", net.get(f"h{pair[1]}").IP()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for pair in pairs[start:start + batch]]
        failed += [pair for pair, proc in procs if proc.wait(10) != 0]
    return failed


def ping_all(net, count: int = 1) -> list[tuple[str, str, PingResult]]:
    """Every host pings every other; returns the failures (lost or duplicated)."""
    failures = []
    for src in net.hosts:
        for dst in net.hosts:
            if src is dst:
                continue
            result = ping(src, dst.IP(), count=count)
            if result.received != result.sent or result.duplicates:
                failures.append((src.name, dst.name, result))
    return failures


def iperf3_tcp(client, server, seconds: float = 3, omit: int = 0) -> float:
    """TCP goodput client -> server in bit/s, measured by iperf3 at the receiver, leaving
    out the first `omit` seconds (slow start, a meter's initial burst)."""
    port = 5201
    srv = server.popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: f":{port}" in server.cmd("ss -ltn"), 5, what="iperf3 server")
        out = client.cmd(f"iperf3 -c {server.IP()} -p {port} -t {seconds} -O {omit} -J")
        return json.loads(out)["end"]["sum_received"]["bits_per_second"]
    finally:
        stop_process(srv)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate a child we started, killing it if it does not go within 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class VnfPort:
    """The switch-side port of a VNF's arm, in the root namespace: where a capture sees every
    frame the VNF gets and sends (inside its namespace, AF_XDP takes frames before any tap)."""

    def __init__(self, instance: str, side: str = "ingress") -> None:
        from nfv.host.netns import arm_names

        self.intf = arm_names(instance, side).outside

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(argv, **kwargs)

    def defaultIntf(self) -> SimpleNamespace:  # Mininet's spelling
        return SimpleNamespace(name=self.intf)


class Capture:
    """tcpdump inside a host's namespace: start, run traffic, then read parsed packets."""

    def __init__(self, host, bpf: str, pcap: Path, intf: str | None = None,
                 count: int | None = None) -> None:
        self.host, self.pcap = host, pcap
        argv = ["tcpdump", "-n", "-U", "-p", "-i", intf or host.defaultIntf().name,
                "-w", str(pcap)]
        if count:
            argv += ["-c", str(count)]
        self.proc = host.popen([*argv, bpf], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
        wait_until(self._listening, 10, interval=0.05, what="tcpdump to listen")

    def _listening(self) -> bool:
        line = self.proc.stderr.readline().decode()
        if not line and self.proc.poll() is not None:
            raise RuntimeError("tcpdump exited")
        return "listening on" in line

    def packets(self, timeout: float = 1.0) -> list:
        """Stop capturing (after `timeout` seconds unless `count` was reached) and parse."""
        from scapy.all import rdpcap  # loads the layers, so packets parse past Raw

        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
        return list(rdpcap(str(self.pcap))) if self.pcap.exists() else []

    def close(self) -> None:
        stop_process(self.proc)


def dump_flows(switch) -> list[str]:
    """The switch's flow table, counters stripped, sorted, for comparisons."""
    out = switch.cmd("ovs-ofctl -O OpenFlow13 --no-stats dump-flows", switch.name)
    return sorted(line.strip() for line in out.splitlines() if "priority" in line)


def empty_tables(net) -> None:
    """Every bridge of `net` without flows, groups or meters (before another controller, or
    none, takes the same bridges over)."""
    for sw in net.switches:
        for what in ("del-flows", "del-groups", "del-meters"):
            subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", what, sw.name], check=True,
                           capture_output=True)  # fmt: skip


@contextlib.contextmanager
def web_servers(net, names: tuple[str, ...], root: Path) -> Iterator[None]:
    """Python's http.server on port 80 of each named host, serving `/id` = the host name."""
    procs = []
    try:
        for name in names:
            docs = root / name
            docs.mkdir(parents=True, exist_ok=True)
            (docs / "id").write_text(name)
            procs.append(net.get(name).popen(
                ["python3", "-m", "http.server", "80", "--directory", str(docs)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield
    finally:
        for proc in procs:
            stop_process(proc)


def http_get(host, url: str, timeout: float = 3) -> str | None:
    """The body of a GET from inside a host, or None when it fails."""
    code = ("import urllib.request as u; "
            f"print(u.urlopen({url!r}, timeout={timeout}).read().decode())")
    out = host.cmd(f"{sys.executable} -c {shlex.quote(code)} 2>/dev/null").strip()
    return out or None


def scapy_send(host, code: str) -> str:
    """Run a few lines of scapy inside a host's namespace (test traffic only)."""
    script = f"from scapy.all import *\nconf.verb = 0\n{code}\n"
    return host.cmd(f"{sys.executable} -c {shlex.quote(script)}")


def reap_vnfs() -> dict[str, list[str]]:
    """Remove the VNFs that stopped controllers left running (a stop keeps them for the
    next controller to take over); those of a live controller stay."""
    from nfv.host.runtime import Runtime

    with Runtime() as runtime:
        return runtime.reap()
