"""Translate between rule values (sdn.model.rules) and OpenFlow 1.3 messages (os-ken parser).

Encoding and decoding are inverses for everything the compiler emits, so the rules read
back from a switch compare equal to the rules we would install: that is what makes
re-applying the same state a no-op and a controller restart free of flow churn.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from sdn.model.rules import Action, Bucket, FlowRule, Group, MatchItems, Meter

GROUP_TYPES = {"all": ofp.OFPGT_ALL, "select": ofp.OFPGT_SELECT,
               "indirect": ofp.OFPGT_INDIRECT, "ff": ofp.OFPGT_FF}
GROUP_NAMES = {v: k for k, v in GROUP_TYPES.items()}
METER_FLAGS = ofp.OFPMF_KBPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS
PKTPS_METER_FLAGS = ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS


def encode_actions(actions: tuple[Action, ...]) -> list:
    out = []
    for action in actions:
        kind = action[0]
        if kind == "output":
            out.append(parser.OFPActionOutput(action[1], 0))
        elif kind == "controller":
            out.append(parser.OFPActionOutput(ofp.OFPP_CONTROLLER, action[1]))
        elif kind == "group":
            out.append(parser.OFPActionGroup(action[1]))
        elif kind == "set_field":
            out.append(parser.OFPActionSetField(**{action[1]: action[2]}))
        elif kind == "push_vlan":
            out.append(parser.OFPActionPushVlan(action[1]))
        elif kind == "pop_vlan":
            out.append(parser.OFPActionPopVlan())
        elif kind == "set_queue":
            out.append(parser.OFPActionSetQueue(action[1]))
        elif kind == "resubmit":
            out.append(parser.NXActionResubmitTable(table_id=action[1]))
        elif kind == "move":
            out.append(parser.NXActionRegMove(src_field=action[1], dst_field=action[2],
                                              n_bits=action[3]))
        else:
            raise ValueError(f"unknown action {action!r}")
    return out


def decode_actions(actions: list) -> tuple[Action, ...]:
    out: list[Action] = []
    for action in actions:
        if isinstance(action, parser.OFPActionOutput):
            if action.port == ofp.OFPP_CONTROLLER:
                out.append(("controller", action.max_len))
            else:
                out.append(("output", action.port))
        elif isinstance(action, parser.OFPActionGroup):
            out.append(("group", action.group_id))
        elif isinstance(action, parser.OFPActionSetField):
            out.append(("set_field", action.key, _plain(action.value)))
        elif isinstance(action, parser.OFPActionPushVlan):
            out.append(("push_vlan", action.ethertype))
        elif isinstance(action, parser.OFPActionPopVlan):
            out.append(("pop_vlan",))
        elif isinstance(action, parser.OFPActionSetQueue):
            out.append(("set_queue", action.queue_id))
        elif isinstance(action, parser.NXActionResubmitTable):
            out.append(("resubmit", action.table_id))
        elif isinstance(action, parser.NXActionRegMove):
            # Open vSwitch answers with the NXM names of fields set by their OXM names
            out.append(("move", action.src_field.removesuffix("_nxm"),
                        action.dst_field.removesuffix("_nxm"), action.n_bits))
        else:
            out.append(("unknown", type(action).__name__))
    return tuple(out)


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def instructions(rule: FlowRule) -> list:
    inst: list = []
    if rule.meter is not None:
        inst.append(parser.OFPInstructionMeter(rule.meter))
    if rule.actions:
        inst.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                 encode_actions(rule.actions)))
    if rule.write_metadata is not None:
        inst.append(parser.OFPInstructionWriteMetadata(*rule.write_metadata))
    if rule.goto is not None:
        inst.append(parser.OFPInstructionGotoTable(rule.goto))
    return inst


def flow_add(datapath, rule: FlowRule) -> parser.OFPFlowMod:
    """ADD replaces a rule with the same table, priority and match, cookie included. A rule
    that can time out asks for a flow-removed message, so the held state can follow."""
    return parser.OFPFlowMod(
        datapath, cookie=rule.cookie, table_id=rule.table, command=ofp.OFPFC_ADD,
        idle_timeout=rule.idle_timeout,
        flags=ofp.OFPFF_SEND_FLOW_REM if rule.idle_timeout else 0,
        priority=rule.priority, match=parser.OFPMatch(**dict(rule.match)),
        instructions=instructions(rule),
    )


def flow_delete(datapath, rule: FlowRule) -> parser.OFPFlowMod:
    """The strict delete of `rule`'s table, priority and match. `flow_add` and this are the
    messages as os-ken builds them: the byte encoders below must give exactly these."""
    return parser.OFPFlowMod(
        datapath, table_id=rule.table, command=ofp.OFPFC_DELETE_STRICT,
        priority=rule.priority, match=parser.OFPMatch(**dict(rule.match)),
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
    )


class Encoder:
    """Stands in for a datapath when a message is only serialized."""

    ofproto = ofp
    ofproto_parser = parser


def flow_add_bytes(rule: FlowRule, xid: int) -> bytes:
    """`flow_add` serialized, assembled from its fixed part and the separately cached bytes
    of its match and of its instructions: after a topology change most rules are new as a
    whole (a known route with a new U-turn port, a known match with a new group) but not
    in their parts, and os-ken takes ~20 µs to serialize one message."""
    match_bytes = _match_bytes(rule.match)
    instruction_bytes = _instruction_bytes(rule.meter, rule.actions, rule.write_metadata,
                                           rule.goto)
    head = _FLOW_MOD_HEAD.pack(
        ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD,
        _FLOW_MOD_HEAD.size + len(match_bytes) + len(instruction_bytes), xid,
        rule.cookie, 0, rule.table, ofp.OFPFC_ADD, rule.idle_timeout, 0, rule.priority,
        ofp.OFP_NO_BUFFER, 0, 0, ofp.OFPFF_SEND_FLOW_REM if rule.idle_timeout else 0)
    return head + match_bytes + instruction_bytes


def flow_delete_bytes(rule: FlowRule, xid: int) -> bytes:
    """`flow_delete` serialized, from the same cached match bytes."""
    match_bytes = _match_bytes(rule.match)
    return _FLOW_MOD_HEAD.pack(
        ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, _FLOW_MOD_HEAD.size + len(match_bytes), xid,
        0, 0, rule.table, ofp.OFPFC_DELETE_STRICT, 0, 0, rule.priority, ofp.OFP_NO_BUFFER,
        ofp.OFPP_ANY, ofp.OFPG_ANY, 0) + match_bytes


# The OpenFlow header and a FlowMod's fixed fields, up to its match.
_FLOW_MOD_HEAD = struct.Struct(ofp.OFP_HEADER_PACK_STR + ofp.OFP_FLOW_MOD_PACK_STR0[1:])


def _serialized(msg: parser.OFPFlowMod) -> bytes:
    msg.set_xid(0)
    msg.serialize()
    return bytes(msg.buf)


@lru_cache(maxsize=1 << 16)
def _match_bytes(match: MatchItems) -> bytes:
    """A FlowMod's match as os-ken serializes it (padded to 8 bytes)."""
    msg = parser.OFPFlowMod(Encoder(), match=parser.OFPMatch(**dict(match)))
    return _serialized(msg)[_FLOW_MOD_HEAD.size:]


@lru_cache(maxsize=1 << 16)
def _instruction_bytes(meter: int | None, actions: tuple[Action, ...],
                       write_metadata: tuple[int, int] | None, goto: int | None) -> bytes:
    """A FlowMod's instructions as os-ken serializes them."""
    rule = FlowRule(0, 0, 0, (), actions, goto, 0, meter, write_metadata)
    msg = parser.OFPFlowMod(Encoder(), instructions=instructions(rule))
    return _serialized(msg)[_FLOW_MOD_HEAD.size + len(_match_bytes(())):]


def flow_stats_request(datapath, cookie: int, cookie_mask: int) -> parser.OFPFlowStatsRequest:
    """Every table's rules whose cookie has `cookie` under `cookie_mask`, with counters."""
    return parser.OFPFlowStatsRequest(datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                      cookie, cookie_mask, parser.OFPMatch())


def match_items(ofp_match) -> MatchItems:
    """An OpenFlow match as `sdn.model.rules.match` spells it (rule keys compare equal)."""
    return tuple(sorted((k, _plain(v)) for k, v in ofp_match.items()))


def decode_flow(dpid: int, stat) -> FlowRule:
    actions: tuple[Action, ...] = ()
    goto = meter = metadata = None
    for inst in stat.instructions:
        if isinstance(inst, parser.OFPInstructionActions):
            actions = decode_actions(inst.actions)
        elif isinstance(inst, parser.OFPInstructionGotoTable):
            goto = inst.table_id
        elif isinstance(inst, parser.OFPInstructionMeter):
            meter = inst.meter_id
        elif isinstance(inst, parser.OFPInstructionWriteMetadata):
            metadata = (inst.metadata, inst.metadata_mask)
    # A stats entry without idle_timeout (a hand-built one) holds a permanent rule.
    idle = getattr(stat, "idle_timeout", None) or 0
    return FlowRule(dpid, stat.table_id, stat.priority, match_items(stat.match), actions, goto,
                    stat.cookie, meter, metadata, idle)


def group_mod(datapath, group: Group, command: int) -> parser.OFPGroupMod:
    buckets = [
        parser.OFPBucket(
            weight=b.weight,
            watch_port=ofp.OFPP_ANY if b.watch_port is None else b.watch_port,
            watch_group=ofp.OFPG_ANY if b.watch_group is None else b.watch_group,
            actions=encode_actions(b.actions),
        )
        for b in group.buckets
    ]
    return parser.OFPGroupMod(datapath, command, GROUP_TYPES[group.type], group.group_id,
                              buckets)


def decode_group(dpid: int, desc) -> Group:
    buckets = tuple(
        Bucket(
            decode_actions(b.actions),
            watch_port=None if b.watch_port == ofp.OFPP_ANY else b.watch_port,
            watch_group=None if b.watch_group == ofp.OFPG_ANY else b.watch_group,
            weight=b.weight,
        )
        for b in desc.buckets
    )
    return Group(dpid, desc.group_id, GROUP_NAMES.get(desc.type, str(desc.type)), buckets)


def meter_mod(datapath, meter: Meter, command: int) -> parser.OFPMeterMod:
    """OFPMC_ADD or OFPMC_MODIFY of a one-band drop meter in kbit/s or packets/s."""
    band = parser.OFPMeterBandDrop(rate=meter.rate, burst_size=meter.burst)
    flags = PKTPS_METER_FLAGS if meter.pktps else METER_FLAGS
    return parser.OFPMeterMod(datapath, command=command, flags=flags,
                              meter_id=meter.meter_id, bands=[band])


def meter_delete(datapath, meter: Meter) -> parser.OFPMeterMod:
    return parser.OFPMeterMod(datapath, command=ofp.OFPMC_DELETE, flags=0,
                              meter_id=meter.meter_id, bands=[])


def decode_meter(dpid: int, config) -> Meter:
    """A meter config as held by a switch; anything but our one-band form keeps a `band`
    description that differs from "drop", so the diff replaces it."""
    bands = config.bands
    if (config.flags in (METER_FLAGS, PKTPS_METER_FLAGS) and len(bands) == 1
            and isinstance(bands[0], parser.OFPMeterBandDrop)):
        return Meter(dpid, config.meter_id, bands[0].rate, bands[0].burst_size,
                     pktps=config.flags == PKTPS_METER_FLAGS)
    described = ",".join(f"{type(b).__name__}:{b.rate}:{b.burst_size}" for b in bands)
    return Meter(dpid, config.meter_id, 0, 0, f"flags={config.flags} {described}")


def port_name(port) -> str:
    """A port description's name as text (os-ken gives bytes)."""
    name = port.name
    return name.decode(errors="replace") if isinstance(name, bytes) else name


def port_is_live(port) -> bool:
    """A physical port that is up and not administratively down."""
    return (port.port_no <= ofp.OFPP_MAX and not port.state & ofp.OFPPS_LINK_DOWN
            and not port.config & ofp.OFPPC_PORT_DOWN)
