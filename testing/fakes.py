"""Stand-ins for a switch and the VNF manager, for unit tests of the controller's apply
path and REST API without Open vSwitch. Only what those paths touch is modelled."""

from __future__ import annotations

import itertools

from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from sdn.controller.state import ControllerState
from sdn.southbound.connection import SwitchConnection


class FakeDatapath:
    """Takes messages like an os-ken datapath and answers each barrier a moment later,
    or with an OpenFlow error when `failing`."""

    ofproto = ofp
    ofproto_parser = parser
    is_active = True

    def __init__(self, dpid: int) -> None:
        self.id = dpid
        self.conn: SwitchConnection | None = None
        self.failing = False
        self.messages = 0
        self._xids = itertools.count(1)

    def send_msg(self, msg) -> None:
        msg.xid = next(self._xids)
        self.messages += 1
        if isinstance(msg, parser.OFPBarrierRequest):
            hub.spawn(self._answer, msg.xid)

    def send(self, buf: bytes) -> None:
        self.messages += 1

    def _answer(self, xid: int) -> None:
        if self.failing:
            self.conn.on_error("OpenFlow error type=5 code=6 (table full)")
        else:
            self.conn.on_barrier_reply(xid)


class NoVnfs:
    """A VNF manager with nothing to place."""

    def reconcile(self, policy) -> None:
        pass

    def instances(self) -> list:
        return []

    def status(self) -> list:
        return []


def connected_state(dpids: tuple[int, ...] = (1, 2), ports: int = 3) -> ControllerState:
    """Controller state with `dpids` connected, tables read, and linked in a line."""
    state = ControllerState()
    state.vnfs = NoVnfs()
    for dpid in dpids:
        dp = FakeDatapath(dpid)
        conn = SwitchConnection(dp)
        dp.conn = conn
        conn.flows_read = conn.groups_read = conn.meters_read = True
        state.switches[dpid] = conn
        state.topology.add_switch(dpid, range(1, ports + 1))
        state.topology.name_ports(dpid, {}, bridge=f"s{dpid}")
    for a, b in itertools.pairwise(dpids):
        state.topology.add_link(a, 1, b, 2)
    return state
