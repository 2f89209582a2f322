"""Rules printed as ovs-ofctl users read them."""

from __future__ import annotations

from sdn.model.rules import Bucket, FlowRule, Group
from sdn.northbound.api import group_json, rule_json
from sdn.northbound.render import flow_text, group_text


def test_flows_read_like_ovs_ofctl_with_their_policy_object():
    lldp = FlowRule(1, 0, 65535, (("eth_type", 0x88CC),), (("controller", 65535),),
                    cookie=0x0100000012345678)
    assert flow_text({**rule_json(lldp), "object": "pipeline"}) == (
        "cookie=0x0100000012345678, table=0, priority=65535,dl_type=0x88cc "
        "actions=CONTROLLER:65535  # pipeline")
    web = FlowRule(1, 2, 300, (("eth_type", 0x0800), ("ip_proto", 6), ("tcp_dst", 80),
                               ("ipv4_dst", "10.0.0.2")),
                   (("set_field", "eth_dst", "00:00:00:00:00:02"), ("output", 3)),
                   goto=None, cookie=0x05, meter=7)
    assert flow_text(rule_json(web)) == (
        "cookie=0x0000000000000005, table=2, priority=300,tcp,tp_dst=80,nw_dst=10.0.0.2 "
        "actions=meter:7,set_field:00:00:00:00:00:02->dl_dst,output:3")
    learn = FlowRule(1, 0, 100, (("in_port", 1), ("eth_src", "00:00:00:00:00:01")), (),
                     goto=1, write_metadata=(0x10, 0xFF))
    assert flow_text(rule_json(learn)) == (
        "cookie=0x0000000000000000, table=0, priority=100,in_port=1,dl_src=00:00:00:00:00:01 "
        "actions=write_metadata:0x10/0xff,goto_table:1")
    nothing = FlowRule(1, 0, 1, (), ())
    assert flow_text(rule_json(nothing)).endswith("priority=1 actions=drop")


def test_groups_read_like_ovs_ofctl():
    ff = Group(1, 9, "ff", (Bucket((("output", 2),), watch_port=2),
                            Bucket((("output", 3),), watch_port=3)))
    assert group_text(group_json(ff)) == (
        "group_id=9,type=ff,bucket=watch_port:2,actions=output:2,"
        "bucket=watch_port:3,actions=output:3")
