"""Rules as Open vSwitch users read them (`ovs-ofctl dump-flows`), from the API's JSON."""

from __future__ import annotations

from typing import Any

# Our (OpenFlow OXM) field names -> the names ovs-ofctl prints.
OVS_FIELDS = {"eth_type": "dl_type", "eth_src": "dl_src", "eth_dst": "dl_dst",
              "vlan_vid": "dl_vlan", "ipv4_src": "nw_src", "ipv4_dst": "nw_dst",
              "ip_proto": "nw_proto", "tcp_src": "tp_src", "tcp_dst": "tp_dst",
              "udp_src": "tp_src", "udp_dst": "tp_dst"}
# Protocol shorthands ovs-ofctl prints in place of dl_type (and nw_proto).
SHORTHANDS = {(0x0800, None): "ip", (0x0806, None): "arp", (0x0800, 6): "tcp",
              (0x0800, 17): "udp", (0x0800, 1): "icmp", (0x86DD, None): "ipv6"}


def _value(name: str, value: Any) -> str:
    if isinstance(value, list):  # masked: [value, mask]
        return f"{_value(name, value[0])}/{_value(name, value[1])}"
    if name in ("eth_type", "metadata") and isinstance(value, int):
        return f"{value:#06x}" if name == "eth_type" else f"{value:#x}"
    return str(value)


def match_text(match: dict[str, Any]) -> str:
    fields = dict(match)
    eth_type, proto = fields.get("eth_type"), fields.get("ip_proto")
    parts = []
    if (eth_type, proto) in SHORTHANDS:
        parts.append(SHORTHANDS[(eth_type, proto)])
        fields.pop("eth_type")
        fields.pop("ip_proto", None)
    elif (eth_type, None) in SHORTHANDS:
        parts.append(SHORTHANDS[(eth_type, None)])
        fields.pop("eth_type")
    parts += [f"{OVS_FIELDS.get(k, k)}={_value(k, v)}" for k, v in fields.items()]
    return ",".join(parts)


# Actions printed as "NAME:argument", the way ovs-ofctl spells them.
SIMPLE_ACTIONS = {"output": "output", "controller": "CONTROLLER", "group": "group",
                  "set_queue": "set_queue"}


def action_text(action: list) -> str:
    kind, *args = action
    if kind in SIMPLE_ACTIONS:
        return f"{SIMPLE_ACTIONS[kind]}:{args[0]}"
    if kind == "set_field":
        return f"set_field:{_value(args[0], args[1])}->{OVS_FIELDS.get(args[0], args[0])}"
    if kind == "push_vlan":
        return f"push_vlan:{args[0]:#06x}"
    if kind == "move":
        return f"move:{args[0]}[0..{args[2] - 1}]->{args[1]}[0..{args[2] - 1}]"
    return ":".join(str(a) for a in (kind, *args))


def flow_text(flow: dict[str, Any]) -> str:
    """One rule as `ovs-ofctl -O OpenFlow13 dump-flows` prints it, with the policy object
    its cookie names as a trailing comment."""
    head = [f"cookie={flow['cookie']}", f"table={flow['table']}", f"priority={flow['priority']}"]
    match = match_text(flow["match"])
    actions = [action_text(a) for a in flow["actions"]]
    if flow.get("meter") is not None:
        actions.insert(0, f"meter:{flow['meter']}")
    if flow.get("write_metadata"):
        actions.append("write_metadata:" + "/".join(flow["write_metadata"]))
    if flow.get("goto") is not None:
        actions.append(f"goto_table:{flow['goto']}")
    text = ", ".join(head) + ("," + match if match else "")
    text += " actions=" + (",".join(actions) or "drop")
    return text + (f"  # {flow['object']}" if flow.get("object") else "")


def group_text(group: dict[str, Any]) -> str:
    """One group as `ovs-ofctl -O OpenFlow13 dump-groups` prints it."""
    buckets = []
    for bucket in group["buckets"]:
        extra = []
        if bucket.get("watch_port") is not None:
            extra.append(f"watch_port:{bucket['watch_port']}")
        if group["type"] == "select":
            extra.append(f"weight:{bucket.get('weight', 1)}")
        actions = ",".join(action_text(a) for a in bucket["actions"]) or "drop"
        buckets.append("bucket=" + ",".join([*extra, f"actions={actions}"]))
    return f"group_id={group['group_id']},type={group['type']}," + ",".join(buckets)
