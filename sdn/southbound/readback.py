"""Reading back what a switch holds, on demand: its meters, flows and groups, told apart
from other replies by the xids of our requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from sdn.model.rules import SwitchRules
from sdn.southbound import codec


@dataclass
class TableRead:
    """One read of a switch's tables; `done` once every reply has arrived."""

    dpid: int
    pending: dict[int, str] = field(default_factory=dict)  # xid -> meters | flows | groups
    rules: SwitchRules = field(default_factory=SwitchRules)

    @staticmethod
    def request(datapath) -> TableRead:
        read = TableRead(datapath.id)
        for kind, msg in (
                ("meters", parser.OFPMeterConfigStatsRequest(datapath, 0, ofp.OFPM_ALL)),
                ("flows", parser.OFPFlowStatsRequest(datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY,
                                                     ofp.OFPG_ANY, 0, 0, parser.OFPMatch())),
                ("groups", parser.OFPGroupDescStatsRequest(datapath, 0))):
            datapath.send_msg(msg)  # sets msg.xid
            read.pending[msg.xid] = kind
        return read

    def expects(self, xid: int) -> bool:
        return xid in self.pending

    def on_reply(self, xid: int, body: list, more: bool) -> None:
        DECODERS[self.pending[xid]](self.rules, self.dpid, body)
        if not more:
            del self.pending[xid]

    @property
    def done(self) -> bool:
        return not self.pending


def add_flows(rules: SwitchRules, dpid: int, body: list) -> None:
    """Flow-stats entries into `rules` (here, and in the read at connect)."""
    for stat in body:
        rules.add_flow(codec.decode_flow(dpid, stat))


def add_groups(rules: SwitchRules, dpid: int, body: list) -> None:
    for desc in body:
        group = codec.decode_group(dpid, desc)
        rules.groups[group.group_id] = group


def add_meters(rules: SwitchRules, dpid: int, body: list) -> None:
    for config in body:
        meter = codec.decode_meter(dpid, config)
        rules.meters[meter.meter_id] = meter


DECODERS = {"flows": add_flows, "groups": add_groups, "meters": add_meters}
