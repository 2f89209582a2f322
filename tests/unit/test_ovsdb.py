"""Datapath choice (the OVSDB and netlink probes are exercised in integration tests)."""

import pytest

from nfv.host.ovsdb import OvsdbError, choose_datapath


def test_kernel_datapath_preferred_when_the_module_is_there() -> None:
    assert choose_datapath(["netdev", "system"], kernel_loaded=True) == "system"


def test_listed_system_without_the_module_means_userspace() -> None:
    assert choose_datapath(["netdev", "system"], kernel_loaded=False) == "netdev"


def test_no_usable_datapath() -> None:
    with pytest.raises(OvsdbError):
        choose_datapath(["system"], kernel_loaded=False)
