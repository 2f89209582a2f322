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

_IPV4 = struct.Struct("!BBHHHBBHII")  # ver/ihl tos len id frag ttl proto csum src dst
_IPV6 = struct.Struct("!IHBBQQQQ")  # ver/tc/flow plen next hlim src(hi,lo) dst(hi,lo)
_TCP = struct.Struct("!HHIIBBH")  # sport dport seq ack doff flags win
_UDP = struct.Struct("!HHH")  # sport dport len
_ICMP = struct.Struct("!BBHH")  # type code csum id
_ARP = struct.Struct("!HHBBH6sI6sI")
_PORTS = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_MASK64 = (1 << 64) - 1


class Parser:
    """Reusable header parser; read its attributes after `parse()` returned `OK`.

    Not thread-safe (one per worker). Attributes are plain ints so that reading them costs no
    allocation; see the module docstring for their meaning.
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
        vihl, _tos, tot, ident, frag, ttl, proto, _csum, src, dst = _IPV4.unpack_from(buf, off)
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
        vtf, plen, nxt, hlim, sh, sl, dh, dl = _IPV6.unpack_from(buf, off)
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
                self.frag_id = _U32.unpack_from(buf, pos + 4)[0]
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
            sport, dport, seq, ack, doff, flags, win = _TCP.unpack_from(buf, off)
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
            itype, code, _csum, ident = _ICMP.unpack_from(buf, off)
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
            vihl, _t, _l, _i, frag, _ttl, proto, _c, src, dst = _IPV4.unpack_from(buf, off)
            pos = off + ((vihl & 0x0F) << 2)
            if pos < off + 20 or frag & 0x1FFF:
                return
        elif ver == 6 and self.proto == PROTO_ICMPV6:
            if avail < 40:
                return
            _v, _pl, proto, _h, sh, sl, dh, dl = _IPV6.unpack_from(buf, off)
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
            ident = _U16.unpack_from(buf, pos + 4)[0]
            self.inner_sport = self.inner_dport = ident
        self.inner_src = src
        self.inner_dst = dst
        self.inner_proto = proto
        self.inner_ok = True


# --- checksums --------------------------------------------------------------------------------


def ones_sum(buf: Buffer, start: int, end: int) -> int:
    """Ones' complement sum (16-bit, not inverted) of buf[start:end], odd length zero-padded.

    Uses the identity sum(words) == int(bytes) mod 0xFFFF, which runs in C.
    """
    v = int.from_bytes(buf[start:end], "big")
    if (end - start) & 1:
        v <<= 8
    r = v % 0xFFFF
    return 0xFFFF if r == 0 and v else r


def fold(s: int) -> int:
    """Fold a sum of 16-bit words into a 16-bit ones' complement sum."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def csum_replace16(csum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3: the checksum after a 16-bit word changed from `old` to `new`."""
    s = (csum ^ 0xFFFF) + (old ^ 0xFFFF) + new
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return s ^ 0xFFFF


def csum_replace32(csum: int, old: int, new: int) -> int:
    """RFC 1624 for a 32-bit field (an IPv4 address)."""
    s = (
        (csum ^ 0xFFFF)
        + ((old >> 16) ^ 0xFFFF)
        + ((old & 0xFFFF) ^ 0xFFFF)
        + (new >> 16)
        + (new & 0xFFFF)
    )
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return s ^ 0xFFFF


def _pseudo_sum(ver: int, src: int, dst: int, proto: int, l4_len: int) -> int:
    if ver == 4:
        s = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
    else:
        s = 0
        for a in (src, dst):
            for _ in range(8):
                s += a & 0xFFFF
                a >>= 16
    return s + proto + (l4_len >> 16) + (l4_len & 0xFFFF)


def ipv4_header_checksum(buf: Buffer, off: int, hlen: int) -> int:
    """Checksum of the IPv4 header at `off` as it should be (the stored one is summed as 0)."""
    s = ones_sum(buf, off, off + hlen) + ((buf[off + 10] << 8 | buf[off + 11]) ^ 0xFFFF)
    return fold(s) ^ 0xFFFF


def l4_checksum(buf: Buffer, p: Parser) -> int:
    """The TCP/UDP/ICMP/ICMPv6 checksum the parsed packet should carry (stored one summed as 0)."""
    off, end = p.l4_off, p.l4_off + p.l4_len
    pos = off + _CSUM_AT.get(p.proto, 0)
    s = ones_sum(buf, off, end) + ((buf[pos] << 8 | buf[pos + 1]) ^ 0xFFFF)
    if p.proto != PROTO_ICMP:
        s += _pseudo_sum(p.ip_ver, p.src, p.dst, p.proto, p.l4_len)
    c = fold(s) ^ 0xFFFF
    if c == 0 and p.proto == PROTO_UDP:
        return 0xFFFF
    return c


_CSUM_AT = {PROTO_TCP: 16, PROTO_UDP: 6, PROTO_ICMP: 2, PROTO_ICMPV6: 2}


# --- in-place rewriting (IPv4) ------------------------------------------------------------------


def _l4_csum_pos(p: Parser) -> int:
    """Offset of the L4 checksum covering the pseudo-header, or -1 when there is none to fix."""
    if p.frag == FRAG_LATER:
        return -1
    if p.proto == PROTO_TCP:
        return p.l4_off + 16
    if p.proto == PROTO_UDP:
        return p.l4_off + 6
    return -1


def _fix_l4(buf: Buffer, p: Parser, old: int, new: int, wide: bool) -> None:
    pos = _l4_csum_pos(p)
    if pos < 0:
        return
    c = buf[pos] << 8 | buf[pos + 1]
    if p.proto == PROTO_UDP and c == 0:
        return  # UDP over IPv4 without a checksum stays without one
    c = csum_replace32(c, old, new) if wide else csum_replace16(c, old, new)
    if p.proto == PROTO_UDP and c == 0:
        c = 0xFFFF
    _U16.pack_into(buf, pos, c)


def _set_ipv4_addr(buf: Buffer, p: Parser, at: int, old: int, new: int) -> None:
    off = p.l3_off
    _U32.pack_into(buf, off + at, new)
    c = buf[off + 10] << 8 | buf[off + 11]
    _U16.pack_into(buf, off + 10, csum_replace32(c, old, new))
    _fix_l4(buf, p, old, new, True)


def set_ipv4_src(buf: Buffer, p: Parser, new: int) -> None:
    """Rewrite the IPv4 source address in place, updating IP and TCP/UDP checksums and `p.src`."""
    _set_ipv4_addr(buf, p, 12, p.src, new)
    p.src = new


def set_ipv4_dst(buf: Buffer, p: Parser, new: int) -> None:
    """Rewrite the IPv4 destination address in place (checksums and `p.dst` follow)."""
    _set_ipv4_addr(buf, p, 16, p.dst, new)
    p.dst = new


def set_sport(buf: Buffer, p: Parser, new: int) -> None:
    """Rewrite the TCP/UDP source port in place, updating the L4 checksum and `p.sport`."""
    _U16.pack_into(buf, p.l4_off, new)
    _fix_l4(buf, p, p.sport, new, False)
    p.sport = new


def set_dport(buf: Buffer, p: Parser, new: int) -> None:
    """Rewrite the TCP/UDP destination port in place, updating the L4 checksum and `p.dport`."""
    _U16.pack_into(buf, p.l4_off + 2, new)
    _fix_l4(buf, p, p.dport, new, False)
    p.dport = new


# --- reply builders ---------------------------------------------------------------------------


def _swap_macs(buf: Buffer) -> None:
    dst = bytes(buf[0:6])
    buf[0:6] = buf[6:12]
    buf[6:12] = dst


def _write_ip(buf: Buffer, p: Parser, proto: int, l4_len: int, df: bool) -> int:
    """Write an IP header (reversed addresses) at p.l3_off; return where L4 starts."""
    off = p.l3_off
    if p.ip_ver == 4:
        flags = 0x4000 if df else 0
        _IPV4.pack_into(buf, off, 0x45, 0, 20 + l4_len, 0, flags, 64, proto, 0, p.dst, p.src)
        _U16.pack_into(buf, off + 10, fold(ones_sum(buf, off, off + 20)) ^ 0xFFFF)
        return off + 20
    _IPV6.pack_into(
        buf, off, 6 << 28, l4_len, proto, 64,
        p.dst >> 64, p.dst & _MASK64, p.src >> 64, p.src & _MASK64,
    )  # fmt: skip
    return off + 40


def _finish_l4(buf: Buffer, p: Parser, l4: int, l4_len: int, proto: int, at: int) -> None:
    s = ones_sum(buf, l4, l4 + l4_len)
    if proto != PROTO_ICMP:
        s += _pseudo_sum(p.ip_ver, p.dst, p.src, proto, l4_len)  # the reply's addresses
    _U16.pack_into(buf, l4 + at, fold(s) ^ 0xFFFF)


def build_tcp_rst(buf: Buffer, p: Parser) -> int:
    """Rewrite the parsed TCP segment in `buf` into the RST its sender should get; return length.

    MACs are swapped and VLAN tags kept, so the reply goes back out of the arm the segment came
    in on. Sequence numbers follow RFC 9293: RST(seq=ack) if the segment had ACK, else
    RST|ACK(ack=seq+len). Returns 0 (buffer untouched) if the parsed packet is not TCP.
    """
    if p.proto != PROTO_TCP or p.ip_ver == 0 or p.frag == FRAG_LATER:
        return 0
    if p.tcp_flags & TCP_ACK:
        seq, ack, flags = p.tcp_ack, 0, TCP_RST
    else:
        seg = p.payload_len + (1 if p.tcp_flags & TCP_SYN else 0) + (p.tcp_flags & TCP_FIN)
        seq, ack, flags = 0, (p.tcp_seq + seg) & 0xFFFFFFFF, TCP_RST | TCP_ACK
    _swap_macs(buf)
    l4 = _write_ip(buf, p, PROTO_TCP, 20, True)
    _TCP.pack_into(buf, l4, p.dport, p.sport, seq, ack, 5 << 4, flags, 0)
    _U32.pack_into(buf, l4 + 16, 0)  # checksum + urgent pointer
    _finish_l4(buf, p, l4, 20, PROTO_TCP, 16)
    return l4 + 20


def build_icmp_unreachable(buf: Buffer, p: Parser, code: int = -1) -> int:
    """Rewrite the parsed IP packet in `buf` into an ICMP(v6) destination unreachable reply.

    The reply quotes as much of the original IP packet as fits (RFC 1812: up to 576 bytes in all
    for IPv4; RFC 4443: up to 1280 for IPv6) and as `len(buf)` allows, so give a buffer with room
    when the original is short. The default code is port unreachable (3 for ICMP, 4 for ICMPv6).
    Returns the reply length, or 0 (buffer untouched) when the packet is not IP or the buffer
    cannot hold the IP header plus 8 bytes of the original.
    """
    if p.ip_ver == 4:
        hdr, proto, itype, limit = 20, PROTO_ICMP, 3, 576
        code = 3 if code < 0 else code
    elif p.ip_ver == 6:
        hdr, proto, itype, limit = 40, PROTO_ICMPV6, 1, 1280
        code = 4 if code < 0 else code
    else:
        return 0
    off = p.l3_off
    start = off + hdr + 8  # where the quoted packet goes
    quoted = min(p.ip_len, limit - hdr - 8, len(buf) - start)
    if quoted < min(p.ip_len, p.ip_hlen + 8):
        return 0
    buf[start : start + quoted] = buf[off : off + quoted]
    _swap_macs(buf)
    l4 = _write_ip(buf, p, proto, 8 + quoted, False)
    _ICMP.pack_into(buf, l4, itype, code, 0, 0)
    _U16.pack_into(buf, l4 + 6, 0)
    _finish_l4(buf, p, l4, 8 + quoted, proto, 2)
    return start + quoted
