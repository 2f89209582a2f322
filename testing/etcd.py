"""A throwaway etcd cluster for tests and bench: 1 or 3 members on free loopback ports,
data in a temporary directory, each member stopped by its pid; optionally clients over
TLS with client certificates (a throwaway CA made with openssl)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import requests

from common.etcd import EtcdTls
from testing.harness import free_port, wait_until

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


@dataclass
class Member:
    name: str
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    tls: EtcdTls | None = None  # the clients' side: CA, certificate, key

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def healthy(self) -> bool:
        tls = ({"verify": str(self.tls.ca), "cert": (str(self.tls.cert), str(self.tls.key))}
               if self.tls else {})
        try:
            answer = requests.get(f"{self.client_url}/health", timeout=1, **tls)
        except requests.RequestException:
            return False
        return answer.ok and answer.json().get("health") == "true"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class EtcdCluster:
    """`with EtcdCluster(3) as etcd: ... etcd.url` (etcd://host:port,...)."""

    def __init__(self, size: int = 1, tls: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sdn-etcd-"))
        self.tls = make_pki(self.dir / "pki") if tls else None
        self.members = [Member(f"m{i}", tls=self.tls) for i in range(size)]

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)

    def __enter__(self) -> EtcdCluster:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        try:
            for member in self.members:
                log = open(self.dir / f"{member.name}.log", "wb")
                member.proc = subprocess.Popen(
                    [ETCD, "--name", member.name, "--data-dir", str(self.dir / member.name),
                     "--listen-client-urls", member.client_url,
                     "--advertise-client-urls", member.client_url,
                     "--listen-peer-urls", member.peer_url,
                     "--initial-advertise-peer-urls", member.peer_url,
                     "--initial-cluster", initial, "--initial-cluster-state", "new",
                     "--initial-cluster-token", self.dir.name,
                     # On loopback: elect a new etcd leader within ~0.5 s of losing one, well
                     # inside the 2 s controller leases the tests use (etcd's defaults, 100
                     # and 1000 ms, can hold every request for about a lease).
                     "--heartbeat-interval", "50", "--election-timeout", "400",
                     *self._tls_flags()],
                    stdout=log, stderr=subprocess.STDOUT)
                log.close()
            wait_until(lambda: all(m.healthy() for m in self.members), 30,
                       what="etcd members healthy")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _tls_flags(self) -> list[str]:
        if self.tls is None:
            return []
        pki = self.tls.ca.parent
        return ["--cert-file", str(pki / "server.pem"), "--key-file", str(pki / "server.key"),
                "--client-cert-auth", "--trusted-ca-file", str(self.tls.ca)]

    def __exit__(self, *_exc: object) -> None:
        for member in self.members:
            member.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        return "\n".join((self.dir / f"{m.name}.log").read_text(errors="replace")[-2000:]
                         for m in self.members if (self.dir / f"{m.name}.log").exists())


def make_pki(directory: Path) -> EtcdTls:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all EC P-256."""
    directory.mkdir(parents=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=sdn test etcd CA")
    # The server certificate is a client one too: etcd 3.4's JSON gateway dials its own
    # gRPC port with it when clients must show certificates.
    for name, usage in (("server", "serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1"),
                        ("client", "clientAuth")):
        (directory / f"{name}.ext").write_text(f"extendedKeyUsage={usage}\n")
        openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=sdn test {name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                "-extfile", f"{name}.ext")
    return EtcdTls(directory / "ca.pem", directory / "client.pem", directory / "client.key")
