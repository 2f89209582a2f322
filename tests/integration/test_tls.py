"""OpenFlow over TLS: switches with a certificate from our CA get in; nothing else does,
and nothing listens for plain OpenFlow."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from testing.harness import SDNCTL, Controller, SwitchTls, network, ping_all, wait_until
from topologies.sdn_topos import LinearTopo

HELLO = bytes.fromhex("0400000800000001")  # OFPT_HELLO, OpenFlow 1.3
REFUSED_TLS = 'sdn_switch_connections_refused_total{reason="tls"}'


@dataclass(frozen=True)
class Pki:
    root: Path

    def controller_args(self) -> tuple[str, ...]:
        return ("--ofp-tls-key", str(self.root / "ctl-privkey.pem"),
                "--ofp-tls-cert", str(self.root / "ctl-cert.pem"),
                "--ofp-tls-ca", str(self.root / "pki/switchca/cacert.pem"))

    def switch(self) -> SwitchTls:
        return SwitchTls(self.root / "sw-privkey.pem", self.root / "sw-cert.pem",
                         self.root / "pki/controllerca/cacert.pem")


def make_pki(root: Path) -> Pki:
    """Open vSwitch's own PKI: a controller CA and a switch CA, one certificate each."""
    root.mkdir(parents=True)
    run = lambda *argv: subprocess.run(argv, cwd=root, check=True, capture_output=True)  # noqa: E731
    run("ovs-pki", f"--dir={root / 'pki'}", "init")
    run("ovs-pki", f"--dir={root / 'pki'}", "req+sign", "ctl", "controller")
    run("ovs-pki", f"--dir={root / 'pki'}", "req+sign", "sw", "switch")
    return Pki(root)


@pytest.fixture(scope="module")
def pkis(tmp_path_factory) -> tuple[Pki, Pki]:
    """Ours, and a stranger's with certificates just as valid but from other CAs."""
    base = tmp_path_factory.mktemp("pki")
    return make_pki(base / "ours"), make_pki(base / "stranger")


def tls_client(port: int, pki: Pki | None) -> bytes:
    """Connect as a switch would, with `pki`'s switch certificate or none; what the
    controller sends back after our HELLO (b"" when it hangs up)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if pki is not None:
        switch = pki.switch()
        context.load_cert_chain(switch.certificate, switch.private_key)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                tls.sendall(HELLO)
                return tls.recv(64)
        except (ssl.SSLError, ConnectionError):
            return b""


def plain_client(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(HELLO)
        try:
            return plain.recv(64)
        except ConnectionResetError:
            return b""


def switches_connected_over_tls() -> int:
    """Open vSwitch's own view (it refreshes this column every few seconds)."""
    out = subprocess.run(["ovs-vsctl", "--format=json", "--columns=target,is_connected",
                          "list", "controller"], capture_output=True, text=True,
                         check=True).stdout
    return sum(1 for target, up in json.loads(out)["data"]
               if target.startswith("ssl:") and up is True)


def test_only_switches_with_our_certificate_get_in(pkis, tmp_path):
    ours, stranger = pkis
    ctl = Controller(tmp_path / "ctl", extra_args=ours.controller_args()).start()
    try:
        with network(LinearTopo(n=2), ctl, tls=ours.switch()) as net:
            assert ping_all(net) == []
            wait_until(lambda: switches_connected_over_tls() == 2, 15,
                       what="Open vSwitch to report both TLS connections up")

            assert tls_client(ctl.ofp_port, ours)[:2] == b"\x04\x00"  # the controller's HELLO
            assert tls_client(ctl.ofp_port, None) == b""
            assert tls_client(ctl.ofp_port, stranger) == b""
            assert plain_client(ctl.ofp_port) == b""  # no plain OpenFlow here
            wait_until(lambda: ctl.metric(REFUSED_TLS) >= 3, 10, what="3 refusals")

            topo = ctl.get("/v1/topology")
            assert sorted(s["dpid"] for s in topo["switches"]) == sorted(
                s.dpid for s in net.switches)
            assert ping_all(net) == []
        assert (ctl.state_dir / "openflow-plain.sock").is_socket()
    finally:
        ctl.stop()
    assert ctl.errors() == []
    assert "refused a TLS connection" in ctl.log_file.read_text()


@pytest.mark.parametrize(("args", "message"), [
    (("--ofp-tls-key", "k.pem"), "needs all three of --ofp-tls-key"),
    (("--ofp-tls-key", "nope.pem", "--ofp-tls-cert", "nope.pem", "--ofp-tls-ca", "nope.pem"),
     "TLS files nope.pem"),
])
def test_incomplete_or_unreadable_tls_files_stop_the_start(tmp_path, args, message):
    result = subprocess.run(
        [str(SDNCTL), "controller", "run", "--state-dir",
         str(tmp_path / "ctl"), "--ofp-port", "1", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
