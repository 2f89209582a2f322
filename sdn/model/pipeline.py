"""The pipeline every switch runs: its tables and the metadata bits that pass between them.
The compiler fills the tables; the reconciler and the controller read rules back by them."""

from __future__ import annotations

# The pipeline. Table 0 traps control traffic and learns hosts, table 1 applies policy
# (traffic classes), table 2 steers service chains (sdn.compile.chains), table 3 forwards: floods,
# delivers to local hosts, and maps every other destination host to its switch (written to
# metadata); table 4 routes to that switch, either straight out of a port or by writing
# the route's next hop (ports and backup) to metadata for table 5, which holds each next hop
# once per switch: where its packets leave, and the U-turns that send a packet handed back
# by a neighbour on. Rules thus scale with hosts + switches, not hosts x paths, and a link
# change rewrites one rule per (switch, destination) whose next hop changed. Table-1 rules
# go on to TABLE_CHAIN, never straight to TABLE_FORWARD: that would let classified traffic
# skip its service chain.
TABLE_INGRESS = 0
TABLE_POLICY = 1
TABLE_CHAIN = 2
TABLE_FORWARD = 3
TABLE_ROUTE = 4
TABLE_NEXT_HOP = 5
# Between tables 3 and 4 the metadata carries the destination switch's dpid; between
# tables 4 and 5, the next hop's id (sdn.compile.route_groups.NextHops).
METADATA_DPID_MASK = (1 << 64) - 1
# In tables 0-2 this bit says the packet did not come from a host: it entered over an
# inter-switch link or from a VNF's port. Edge-only policy (traffic classes, chain
# classifiers) matches it clear.
METADATA_FROM_LINK = 1 << 63
# In tables 0-2, set (with METADATA_FROM_LINK) on packets from a VNF's port (sdn.compile.chains).
METADATA_FROM_VNF = 1 << 62
# OpenFlow drops a packet output to the port it came in on unless that port is named
# this way; fast-failover U-turns need it.
IN_PORT = 0xFFFFFFF8
# A packet-out to this port goes through the switch's own tables, and comes in on
# CONTROLLER_PORT: how an LLDP probe tests a switch's trap rule and packet-in path.
TABLE_PORT = 0xFFFFFFF9
CONTROLLER_PORT = 0xFFFFFFFD
PRIO_ROUTE = 200
