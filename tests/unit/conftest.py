"""Fixtures shared by the unit tests that talk to a real etcd (one member on loopback;
`make setup` installs Debian's etcd-server, no root needed)."""

from __future__ import annotations

import pytest

from common.etcd import Etcd, delete
from testing.etcd import EtcdCluster


@pytest.fixture(scope="session")
def etcd_cluster():
    with EtcdCluster(1) as cluster:
        yield cluster


@pytest.fixture
def etcd(etcd_cluster):
    """A client on an empty /sdn/ tree."""
    client = Etcd.from_url(etcd_cluster.url)
    client.txn([], [delete("/sdn/", prefix=True)])
    return client
