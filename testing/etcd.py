"""A throwaway etcd cluster for tests and bench: 1 or 3 members on free loopback ports,
data in a temporary directory, each member stopped by its pid."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import requests

from testing.harness import free_port, wait_until

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


@dataclass
class Member:
    name: str
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def healthy(self) -> bool:
        try:
            answer = requests.get(f"{self.client_url}/health", timeout=1)
        except requests.RequestException:
            return False
        return answer.ok and answer.json().get("health") == "true"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class EtcdCluster:
    """`with EtcdCluster(3) as etcd: ... etcd.url` (etcd://host:port,...)."""

    def __init__(self, size: int = 1) -> None:
        self.members = [Member(f"m{i}") for i in range(size)]
        self.dir = Path(tempfile.mkdtemp(prefix="sdn-etcd-"))

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
                     "--initial-cluster-token", self.dir.name],
                    stdout=log, stderr=subprocess.STDOUT)
                log.close()
            wait_until(lambda: all(m.healthy() for m in self.members), 30,
                       what="etcd members healthy")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        for member in self.members:
            member.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        return "\n".join((self.dir / f"{m.name}.log").read_text(errors="replace")[-2000:]
                         for m in self.members if (self.dir / f"{m.name}.log").exists())
