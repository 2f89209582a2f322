"""Header parsing and in-place rewriting for the VNF hot path, without scapy and without copies.

One `Parser` is created per worker and reused for every frame: `parse(buf, length)` fills its
preallocated fields and returns a status code (`OK` or the reason the frame is malformed) instead
of allocating an object per packet. Nothing in this module raises on bad input: truncated or
garbage frames produce a status.

Field conventions after `parse()` (fields of a layer that is absent keep value 0):

- `eth_type`: EtherType after the VLAN tags; `vlan_count` (0-2), `vlan_tci` (outer), `vlan_tci2`.
- `l3_off`: offset of the ARP/IP header. `ip_ver` is 4, 6 or 0 (not IP).
- `src`, `dst`: IP addresses as ints (128-bit for IPv6). `proto`: the L4 protocol number (for
  IPv6, after the extension headers). `ip_len`: the IP packet length (header + payload) as the
  header says, already checked to fit in the frame; Ethernet padding lies beyond it.
- `frag`: `FRAG_NONE`, `FRAG_FIRST` (offset 0, more fragments) or `FRAG_LATER` (no L4 header);
  `frag_id` is the IPv4 identification or the IPv6 fragment header's id.
- `l4_off`, `l4_len`: where the L4 header starts and how many bytes of L4 (header + payload) the IP
  length covers. `payload_off`, `payload_len`: the L4 payload.
- TCP/UDP: `sport`, `dport`; TCP also `tcp_flags`, `tcp_seq`, `tcp_ack`, `tcp_win`.
- ICMP/ICMPv6: `icmp_type`, `icmp_code`, `icmp_id` (echo id, also copied to `sport` and `dport`
  so that flow keys work unchanged). For ICMP errors (unreachable, time exceeded, parameter
  problem, packet too big) the quoted packet is parsed too: `inner_ok` is true when its addresses,
  protocol and ports (`inner_src`, `inner_dst`, `inner_proto`, `inner_sport`, `inner_dport`) were
  readable.
- ARP: `arp_op`, `arp_spa`, `arp_tpa` (IPv4 ARP over Ethernet only).
"""

from __future__ import annotations

import struct

from nfv.datapath.compiled import fast

Buffer = bytes | bytearray | memoryview

# --- status codes returned by Parser.parse --------------------------------------------------
OK = 0
TRUNCATED = 1
TOO_MANY_TAGS = 2
BAD_IP_VERSION = 3
BAD_IP_HEADER = 4
BAD_IP_LENGTH = 5
BAD_EXT_HEADER = 6
BAD_L4_HEADER = 7
STATUS_NAMES = (
    "ok",
    "truncated",
    "too_many_tags",
    "bad_ip_version",
    "bad_ip_header",
    "bad_ip_length",
    "bad_ext_header",
    "bad_l4_header",
)

# --- protocol numbers -----------------------------------------------------------------------
ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD
ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20

FRAG_NONE = 0
FRAG_FIRST = 1
FRAG_LATER = 2

# ICMP types whose body quotes the offending packet.
ICMP_ERROR_TYPES = frozenset((3, 4, 5, 11, 12))
ICMPV6_ERROR_TYPES = frozenset((1, 2, 3, 4))
# ICMP types that carry an identifier (echo, timestamp, info, address mask; request and reply).
ICMP_ID_TYPES = frozenset((0, 8, 13, 14, 15, 16, 17, 18))
ICMPV6_ID_TYPES = frozenset((128, 129))

# IPv6 extension headers we step over: hop-by-hop, routing, destination options, mobility,
# HIP, shim6 (length in 8-byte units), AH (4-byte units), fragment (fixed 8 bytes).
_IPV6_EXT = frozenset((0, 43, 60, 135, 139, 140))
_IPV6_AH = 51
_IPV6_FRAG = 44
_MAX_EXT_HEADERS = 8

_TAG_TYPES = frozenset((ETH_VLAN, ETH_QINQ))
_IP_TYPES = frozenset((ETH_IPV4, ETH_IPV6))
_ICMP_PROTOS = frozenset((PROTO_ICMP, PROTO_ICMPV6))
_PORT_PROTOS = frozenset((PROTO_TCP, PROTO_UDP))

IPV4_HDR = struct.Struct("!BBHHHBBHII")  # ver/ihl tos len id frag ttl proto csum src dst
IPV6_HDR = struct.Struct("!IHBBQQQQ")  # ver/tc/flow plen next hlim src(hi,lo) dst(hi,lo)
TCP_HDR = struct.Struct("!HHIIBBH")  # sport dport seq ack doff flags win
_UDP = struct.Struct("!HHH")  # sport dport len
ICMP_HDR = struct.Struct("!BBHH")  # type code csum id
_ARP = struct.Struct("!HHBBH6sI6sI")
_PORTS = struct.Struct("!HH")
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
MASK64 = (1 << 64) - 1


class PyParser:
    """Reusable header parser; read its attributes after `parse()` returned `OK`.

    Not thread-safe (one per worker). Attributes are plain ints so that reading them costs no
    allocation; see the module docstring for their meaning. `Parser` is this class in C where
    it is built (`nfv.datapath.compiled`), field for field the same; this one is the
    reference it is tested against.
    """

    __slots__ = (
        "_extra",
        "arp_op",
        "arp_spa",
        "arp_tpa",
        "dport",
        "dst",
        "eth_type",
        "frag",
        "frag_id",
        "icmp_code",
        "icmp_id",
        "icmp_type",
        "inner_dport",
        "inner_dst",
        "inner_ok",
        "inner_proto",
        "inner_sport",
        "inner_src",
        "ip_hlen",
        "ip_len",
        "ip_ver",
        "l3_off",
        "l4_len",
        "l4_off",
        "length",
        "payload_len",
        "payload_off",
        "proto",
        "sport",
        "src",
        "tcp_ack",
        "tcp_flags",
        "tcp_seq",
        "tcp_win",
        "ttl",
        "vlan_count",
        "vlan_tci",
        "vlan_tci2",
    )

    def __init__(self) -> None:
        self.length = self.eth_type = self.vlan_count = self.vlan_tci = self.vlan_tci2 = 0
        self.l3_off = 0
        self._clear_l3()
        self._extra = True
        self._clear_extra()

    def _clear_l3(self) -> None:
        self.ip_ver = self.src = self.dst = self.proto = self.ttl = 0
        self.ip_hlen = self.ip_len = self.frag = self.frag_id = 0
        self.l4_off = self.l4_len = self.payload_off = self.payload_len = 0
        self.sport = self.dport = 0

    def _clear_extra(self) -> None:
        """Zero the fields only some protocols set (cheaper than clearing everything per frame:
        a stream of UDP frames never pays for it)."""
        self.tcp_flags = self.tcp_seq = self.tcp_ack = self.tcp_win = 0
        self.icmp_type = self.icmp_code = self.icmp_id = 0
        self.inner_ok = False
        self.inner_src = self.inner_dst = self.inner_proto = 0
        self.inner_sport = self.inner_dport = 0
        self.arp_op = self.arp_spa = self.arp_tpa = 0
        self._extra = False

    def parse(self, buf: Buffer, length: int) -> int:
        """Parse the first `length` bytes of `buf`; return `OK` or a malformed-reason code.

        After a status other than `OK` the fields are unspecified, except `ip_ver` which is 0.
        """
        if self._extra:
            self._clear_extra()
        self.ip_ver = 0
        if length > len(buf):
            length = len(buf)
        self.length = length
        self.vlan_count = self.vlan_tci = self.vlan_tci2 = 0
        if length < 14:
            return TRUNCATED
        et = buf[12] << 8 | buf[13]
        off = 14
        if et in _TAG_TYPES:
            if length < 18:
                return TRUNCATED
            self.vlan_tci = (buf[14] << 8 | buf[15]) & 0xFFFF
            et = buf[16] << 8 | buf[17]
            off = 18
            self.vlan_count = 1
            if et in _TAG_TYPES:
                if length < 22:
                    return TRUNCATED
                self.vlan_tci2 = buf[18] << 8 | buf[19]
                et = buf[20] << 8 | buf[21]
                off = 22
                self.vlan_count = 2
                if et in _TAG_TYPES:
                    return TOO_MANY_TAGS
        self.eth_type = et
        self.l3_off = off
        if et in _IP_TYPES:
            status = (
                self._ipv4(buf, off, length) if et == ETH_IPV4 else self._ipv6(buf, off, length)
            )
            if status:
                self.ip_ver = 0
            return status
        self._clear_l3()
        if et == ETH_ARP:
            return self._arp(buf, off, length)
        return OK

    def _arp(self, buf: Buffer, off: int, length: int) -> int:
        if length - off < 28:
            return TRUNCATED
        htype, ptype, hlen, plen, op, _sha, spa, _tha, tpa = _ARP.unpack_from(buf, off)
        if htype == 1 and ptype == ETH_IPV4 and hlen == 6 and plen == 4:
            self._extra = True
            self.arp_op = op
            self.arp_spa = spa
            self.arp_tpa = tpa
        return OK

    def _ipv4(self, buf: Buffer, off: int, length: int) -> int:
        if length - off < 20:
            return TRUNCATED
        vihl, _tos, tot, ident, frag, ttl, proto, _csum, src, dst = IPV4_HDR.unpack_from(buf, off)
        if vihl >> 4 != 4:
            return BAD_IP_VERSION
        hlen = (vihl & 0x0F) << 2
        if hlen < 20:
            return BAD_IP_HEADER
        if tot < hlen:
            return BAD_IP_LENGTH
        if tot > length - off:
            return TRUNCATED
        self.ip_ver = 4
        self.src = src
        self.dst = dst
        self.proto = proto
        self.ttl = ttl
        self.ip_hlen = hlen
        self.ip_len = tot
        if frag & 0x3FFF:
            self.frag_id = ident
            if frag & 0x1FFF:
                self.frag = FRAG_LATER
                return self._later_fragment(off + hlen, off + tot)
            self.frag = FRAG_FIRST
        else:
            self.frag = self.frag_id = 0
        return self._l4(buf, off + hlen, off + tot, proto)

    def _later_fragment(self, off: int, end: int) -> int:
        """A fragment other than the first: it has no L4 header, only payload."""
        self.l4_off = self.payload_off = off
        self.l4_len = self.payload_len = end - off
        self.sport = self.dport = 0
        return OK

    def _ipv6(self, buf: Buffer, off: int, length: int) -> int:
        if length - off < 40:
            return TRUNCATED
        vtf, plen, nxt, hlim, sh, sl, dh, dl = IPV6_HDR.unpack_from(buf, off)
        if vtf >> 28 != 6:
            return BAD_IP_VERSION
        end = off + 40 + plen
        if end > length:
            return TRUNCATED
        self.ip_ver = 6
        self.frag = self.frag_id = 0
        self.src = sh << 64 | sl
        self.dst = dh << 64 | dl
        self.ttl = hlim
        self.ip_len = 40 + plen
        pos = off + 40
        for _ in range(_MAX_EXT_HEADERS):
            if nxt in _IPV6_EXT:
                if end - pos < 8:
                    return BAD_EXT_HEADER
                nxt, hl = buf[pos], buf[pos + 1]
                pos += (hl + 1) << 3
            elif nxt == _IPV6_AH:
                if end - pos < 8:
                    return BAD_EXT_HEADER
                nxt, hl = buf[pos], buf[pos + 1]
                pos += (hl + 2) << 2
            elif nxt == _IPV6_FRAG:
                if end - pos < 8:
                    return BAD_EXT_HEADER
                fo = buf[pos + 2] << 8 | buf[pos + 3]
                self.frag_id = U32.unpack_from(buf, pos + 4)[0]
                nxt = buf[pos]
                pos += 8
                if fo & 0xFFF8:
                    self.frag = FRAG_LATER
                elif fo & 1:
                    self.frag = FRAG_FIRST
            else:
                break
            if pos > end:
                return BAD_EXT_HEADER
        else:
            return BAD_EXT_HEADER
        self.proto = nxt
        self.ip_hlen = pos - off
        if self.frag == FRAG_LATER:
            return self._later_fragment(pos, end)
        return self._l4(buf, pos, end, nxt)

    def _l4(self, buf: Buffer, off: int, end: int, proto: int) -> int:
        self.l4_off = off
        avail = end - off
        self.l4_len = avail
        if proto == PROTO_TCP:
            if avail < 20:
                return TRUNCATED
            sport, dport, seq, ack, doff, flags, win = TCP_HDR.unpack_from(buf, off)
            hl = (doff >> 4) << 2
            if hl < 20 or hl > avail:
                return BAD_L4_HEADER
            self._extra = True
            self.sport = sport
            self.dport = dport
            self.tcp_seq = seq
            self.tcp_ack = ack
            self.tcp_flags = flags
            self.tcp_win = win
            self.payload_off = off + hl
            self.payload_len = avail - hl
            return OK
        if proto == PROTO_UDP:
            if avail < 8:
                return TRUNCATED
            sport, dport, ulen = _UDP.unpack_from(buf, off)
            if ulen > avail and self.frag == FRAG_FIRST:
                ulen = avail  # the datagram continues in later fragments
            if ulen < 8 or ulen > avail:
                return BAD_L4_HEADER
            self.sport = sport
            self.dport = dport
            self.payload_off = off + 8
            self.payload_len = ulen - 8
            return OK
        if proto in _ICMP_PROTOS:
            if avail < 8:
                return TRUNCATED
            itype, code, _csum, ident = ICMP_HDR.unpack_from(buf, off)
            self._extra = True
            self.sport = self.dport = 0
            self.icmp_type = itype
            self.icmp_code = code
            self.payload_off = off + 8
            self.payload_len = avail - 8
            if proto == PROTO_ICMP:
                if itype in ICMP_ID_TYPES:
                    self.icmp_id = self.sport = self.dport = ident
                elif itype in ICMP_ERROR_TYPES:
                    self._inner(buf, off + 8, end)
            elif itype in ICMPV6_ID_TYPES:
                self.icmp_id = self.sport = self.dport = ident
            elif itype in ICMPV6_ERROR_TYPES:
                self._inner(buf, off + 8, end)
            return OK
        self.sport = self.dport = 0
        self.payload_off = off
        self.payload_len = avail
        return OK

    def _inner(self, buf: Buffer, off: int, end: int) -> None:
        """Read the addresses, protocol and ports of the packet an ICMP error quotes."""
        avail = end - off
        if avail < 1:
            return
        ver = buf[off] >> 4
        if ver == 4 and self.proto == PROTO_ICMP:
            if avail < 20:
                return
            vihl, _t, _l, _i, frag, _ttl, proto, _c, src, dst = IPV4_HDR.unpack_from(buf, off)
            pos = off + ((vihl & 0x0F) << 2)
            if pos < off + 20 or frag & 0x1FFF:
                return
        elif ver == 6 and self.proto == PROTO_ICMPV6:
            if avail < 40:
                return
            _v, _pl, proto, _h, sh, sl, dh, dl = IPV6_HDR.unpack_from(buf, off)
            src = sh << 64 | sl
            dst = dh << 64 | dl
            pos = off + 40
        else:
            return
        if end - pos < 8:
            return
        if proto in _PORT_PROTOS:
            self.inner_sport, self.inner_dport = _PORTS.unpack_from(buf, pos)
        elif proto in _ICMP_PROTOS:
            ident = U16.unpack_from(buf, pos + 4)[0]
            self.inner_sport = self.inner_dport = ident
        self.inner_src = src
        self.inner_dst = dst
        self.inner_proto = proto
        self.inner_ok = True


Parser = PyParser if fast is None else fast.Parser


# --- checksums --------------------------------------------------------------------------------


# --- in-place rewriting (IPv4) ------------------------------------------------------------------


# --- reply builders ---------------------------------------------------------------------------


