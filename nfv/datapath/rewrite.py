"""Rewriting parsed frames in place: incremental checksums (RFC 1624), NAT of addresses
and ports, and the replies a function builds in the frame's own buffer (TCP RST, ICMP
unreachable)."""

from __future__ import annotations

from collections.abc import Callable

from nfv.datapath.compiled import fast
from nfv.datapath.packet import (
    FRAG_LATER,
    ICMP_HDR,
    IPV4_HDR,
    IPV6_HDR,
    MASK64,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_HDR,
    TCP_RST,
    TCP_SYN,
    U16,
    U32,
    Buffer,
    Parser,
)


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
    U16.pack_into(buf, pos, c)


def _set_ipv4_addr(buf: Buffer, p: Parser, at: int, old: int, new: int) -> None:
    off = p.l3_off
    U32.pack_into(buf, off + at, new)
    c = buf[off + 10] << 8 | buf[off + 11]
    U16.pack_into(buf, off + 10, csum_replace32(c, old, new))
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
    U16.pack_into(buf, p.l4_off, new)
    _fix_l4(buf, p, p.sport, new, False)
    p.sport = new


def set_dport(buf: Buffer, p: Parser, new: int) -> None:
    """Rewrite the TCP/UDP destination port in place, updating the L4 checksum and `p.dport`."""
    U16.pack_into(buf, p.l4_off + 2, new)
    _fix_l4(buf, p, p.dport, new, False)
    p.dport = new


def nat_ipv4_py(buf: Buffer, p: Parser, dst: bool, ip: int, port: int | None) -> None:
    """Rewrite the IPv4 destination (`dst`) or source address to `ip` and, when `port` is set and
    differs, the matching port; checksums and `p` follow. The load balancer's per-packet NAT, and
    the reference for `nfv.datapath._fast.nat`, which does the same in C."""
    old_port = p.dport if dst else p.sport
    (set_ipv4_dst if dst else set_ipv4_src)(buf, p, ip)
    if port and port != old_port:
        (set_dport if dst else set_sport)(buf, p, port)


NatFunction = Callable[[Buffer, Parser, bool, int, "int | None"], None]


def nat_for(p: Parser) -> NatFunction:
    """The NAT function for frames `p` parses: in C where built (it needs the C parser)."""
    if fast is not None and isinstance(p, fast.Parser):
        return fast.nat
    return nat_ipv4_py


def _swap_macs(buf: Buffer) -> None:
    dst = bytes(buf[0:6])
    buf[0:6] = buf[6:12]
    buf[6:12] = dst


def _write_ip(buf: Buffer, p: Parser, proto: int, l4_len: int, df: bool) -> int:
    """Write an IP header (reversed addresses) at p.l3_off; return where L4 starts."""
    off = p.l3_off
    if p.ip_ver == 4:
        flags = 0x4000 if df else 0
        IPV4_HDR.pack_into(buf, off, 0x45, 0, 20 + l4_len, 0, flags, 64, proto, 0, p.dst, p.src)
        U16.pack_into(buf, off + 10, fold(ones_sum(buf, off, off + 20)) ^ 0xFFFF)
        return off + 20
    IPV6_HDR.pack_into(
        buf, off, 6 << 28, l4_len, proto, 64,
        p.dst >> 64, p.dst & MASK64, p.src >> 64, p.src & MASK64,
    )  # fmt: skip
    return off + 40


def _finish_l4(buf: Buffer, p: Parser, l4: int, l4_len: int, proto: int, at: int) -> None:
    s = ones_sum(buf, l4, l4 + l4_len)
    if proto != PROTO_ICMP:
        s += _pseudo_sum(p.ip_ver, p.dst, p.src, proto, l4_len)  # the reply's addresses
    U16.pack_into(buf, l4 + at, fold(s) ^ 0xFFFF)


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
    TCP_HDR.pack_into(buf, l4, p.dport, p.sport, seq, ack, 5 << 4, flags, 0)
    U32.pack_into(buf, l4 + 16, 0)  # checksum + urgent pointer
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
    ICMP_HDR.pack_into(buf, l4, itype, code, 0, 0)
    U16.pack_into(buf, l4 + 6, 0)
    _finish_l4(buf, p, l4, 8 + quoted, proto, 2)
    return start + quoted
