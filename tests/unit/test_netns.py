"""Naming of VNF arms: within IFNAMSIZ, deterministic, unique."""

from nfv.host.netns import IFNAMSIZ, arm_names


def test_short_name_is_readable() -> None:
    arms = arm_names("fw", "ingress")
    assert (arms.outside, arms.peer, arms.inside) == ("vfw-i", "vfw.i", "ingress")
    assert arm_names("fw", "egress").outside == "vfw-e"


def test_prefix_is_used() -> None:
    assert arm_names("fw", "ingress", port_prefix="nf3").outside == "nf3fw-i"


def test_long_names_fit_and_stay_unique() -> None:
    names = ["a" * 32, "a" * 31 + "b", "analyzer-0", "analyzer-1", "abcdefghijklm"]
    outside = [arm_names(n, side).outside for n in names for side in ("ingress", "egress")]
    peers = [arm_names(n, side).peer for n in names for side in ("ingress", "egress")]
    assert all(len(x) <= IFNAMSIZ for x in outside + peers)
    assert len(set(outside + peers)) == len(outside + peers)


def test_names_are_deterministic() -> None:
    assert arm_names("x" * 30, "ingress") == arm_names("x" * 30, "ingress")


def test_boundary_length_switches_to_hash() -> None:
    fits = "a" * (IFNAMSIZ - 3)  # v + name + -i == 15
    assert arm_names(fits, "ingress").outside == f"v{fits}-i"
    longer = arm_names(fits + "b", "ingress").outside
    assert len(longer) == IFNAMSIZ and longer != f"v{fits}b-i"[:IFNAMSIZ]
