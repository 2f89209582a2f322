"""The VNF packet loop: frames in from two AF_PACKET arms, through a function, out the other arm.

Two receive paths:

- `ring` (default): a TPACKET_V3 RX ring mapped into the process. The kernel fills blocks of
  frames; we walk a whole block with integer reads on casted memoryviews and hand it back with one
  store, so the per-frame cost is the function call plus one `send`.
- `recv`: non-blocking `recvmsg_into` in batches; simpler and kept as a fallback and a yardstick.

Either way each frame is copied into one preallocated scratch buffer (a memcpy in C) before the
function sees it. That gives functions a writable view with room beyond `length`, so a BOUNCE
reply may be longer than the frame that caused it (an ICMP error quoting a short packet), and it
is where a VLAN tag that the kernel stripped into metadata is put back, so the VNF stays
transparent to tagged traffic. Frames the kernel reports as outgoing are never received
(PACKET_IGNORE_OUTGOING, and the ring's packet type is checked too).

`function.tick(now)` runs about every `tick_interval` seconds; the frames it yields as
`(side, frame)` are sent out of arm `side`.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nfv.datapath.function import NetworkFunction, Side, Verdict

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
PACKET_OUTGOING = 4

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40

# Offsets inside struct tpacket3_hdr (see linux/if_packet.h).
_H_NEXT, _H_SNAPLEN, _H_LEN, _H_STATUS = 0, 3, 4, 5  # in u32 units
_H_MAC = 12  # u16 units (byte 24)
_H_VLAN_TCI = 8  # u32 units (byte 32)
_H_VLAN_TPID = 18  # u16 units (byte 36)
_H_PKTTYPE = 48 + 10  # sockaddr_ll follows the 48-byte header; sll_pkttype is its byte 10
# Offsets inside the block descriptor, in u32 units.
_B_STATUS, _B_NUM_PKTS, _B_FIRST = 2, 3, 4

_AUXDATA = struct.Struct("=IIIHHHH")  # status len snaplen mac net vlan_tci vlan_tpid
_STATS = struct.Struct("=II")  # packets drops (TPACKET_V3 appends freeze_q_cnt)
# Send failures that cost a frame but not the worker: queue full, too big, link down.
_TX_SOFT_ERRORS = frozenset(
    (errno.ENOBUFS, errno.EAGAIN, errno.EMSGSIZE, errno.ENETDOWN, errno.ENXIO)
)
SCRATCH = 65536 + 4  # a frame can never be longer than the largest IP packet plus a tag
RECV_BATCH = 64


@dataclass
class RingConfig:
    """TPACKET_V3 geometry. 16 blocks of 1 MiB hold ~16k minimum-size frames per arm; a block
    is handed to us when full or after `timeout_ms`, which bounds the latency a frame sees."""

    block_size: int = 1 << 20
    block_count: int = 16
    frame_size: int = 2048
    timeout_ms: int = 1


@dataclass
class ArmStats:
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_errors: int = 0
    kernel_drops: int = 0
    truncated: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Arm:
    """One interface: its socket, its RX ring (if any) and its counters."""

    name: str
    side: Side
    sock: socket.socket
    stats: ArmStats = field(default_factory=ArmStats)
    ring: mmap.mmap | None = None
    mv: memoryview | None = None
    u32: memoryview | None = None
    u16: memoryview | None = None
    blocks: list[int] = field(default_factory=list)
    cur: int = 0

    def kernel_stats(self) -> None:
        """Fold the kernel's drop counter (reset on every read) into ours."""
        with contextlib.suppress(OSError):
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
            self.stats.kernel_drops += _STATS.unpack_from(raw)[1]

    def close(self) -> None:
        for view in (self.u32, self.u16, self.mv):
            if view is not None:
                view.release()
        self.u32 = self.u16 = self.mv = None
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        self.sock.close()


def open_arm(name: str, side: Side, ring: RingConfig | None) -> Arm:
    """Open a raw socket on interface `name` (promiscuous, outgoing frames ignored)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        with contextlib.suppress(OSError):  # Linux < 4.20: we check the packet type instead
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        arm = Arm(name=name, side=side, sock=sock)
        if ring is not None:
            _setup_ring(arm, ring)
        else:
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        sock.bind((name, ETH_P_ALL))
        ifindex = socket.if_nametoindex(name)
        mreq = struct.pack("=iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
        return arm
    except BaseException:
        sock.close()
        raise


def _setup_ring(arm: Arm, cfg: RingConfig) -> None:
    sock = arm.sock
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
    frames = cfg.block_size // cfg.frame_size * cfg.block_count
    req = struct.pack(
        "=IIIIIII", cfg.block_size, cfg.block_count, cfg.frame_size, frames, cfg.timeout_ms, 0, 0
    )
    sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
    size = cfg.block_size * cfg.block_count
    arm.ring = mmap.mmap(sock.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    arm.mv = memoryview(arm.ring)
    arm.u32 = arm.mv.cast("I")
    arm.u16 = arm.mv.cast("H")
    arm.blocks = [i * cfg.block_size for i in range(cfg.block_count)]


class Dataplane:
    """Moves frames between `ingress` and `egress` through `function` until `stop()`."""

    def __init__(
        self,
        function: NetworkFunction,
        ingress: str,
        egress: str,
        mode: str = "ring",
        ring: RingConfig | None = None,
        tick_interval: float = 0.1,
    ) -> None:
        if mode not in ("ring", "recv"):
            raise ValueError(f"unknown dataplane mode {mode!r}")
        self.function = function
        self.mode = mode
        self.tick_interval = tick_interval
        ring_cfg = (ring or RingConfig()) if mode == "ring" else None
        self.arms: list[Arm] = []
        try:
            self.arms.append(open_arm(ingress, Side.INGRESS, ring_cfg))
            self.arms.append(open_arm(egress, Side.EGRESS, ring_cfg))
        except BaseException:
            self.close()
            raise
        self.dropped = 0  # frames the function dropped
        self.bounced = 0
        self._running = False
        self._scratch = bytearray(SCRATCH)
        self._view = memoryview(self._scratch)
        self._views: list[memoryview | None] = [None] * (SCRATCH + 1)

    # --- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run()` to return (safe from a signal handler)."""
        self._running = False

    def close(self) -> None:
        self._views = []
        for arm in self.arms:
            arm.close()
        self.arms = []

    def stats(self) -> dict[str, dict[str, int]]:
        for arm in self.arms:
            arm.kernel_stats()
        return {arm.side.name.lower(): arm.stats.as_dict() for arm in self.arms}

    # --- the loop ------------------------------------------------------------------------------

    def run(self, on_tick: Callable[[float], None] | None = None) -> None:
        """Forward until `stop()`; `on_tick(now)` runs after each function tick."""
        self._running = True
        poller = select.poll()
        for arm in self.arms:
            poller.register(arm.sock.fileno(), select.POLLIN | select.POLLERR)
        ingress, egress = self.arms
        drain = self._drain_ring if self.mode == "ring" else self._drain_recv
        interval = self.tick_interval
        next_tick = time.monotonic() + interval
        while self._running:
            moved = drain(ingress, egress) + drain(egress, ingress)
            now = time.monotonic()
            if now >= next_tick:
                self._tick(now)
                if on_tick is not None:
                    on_tick(now)
                next_tick = now + interval
            if not moved:
                wait = max(0, min(int((next_tick - now) * 1000) + 1, 100))
                with contextlib.suppress(InterruptedError):
                    poller.poll(wait)

    def _tick(self, now: float) -> None:
        for side, frame in self.function.tick(now):
            self._send(self.arms[side], memoryview(frame), len(frame))

    def _view_of(self, n: int) -> memoryview:
        """A cached slice scratch[:n]: sending needs an exact-length view, making one per frame
        would allocate."""
        v = self._views[n]
        if v is None:
            v = self._views[n] = self._view[:n]
        return v

    def _send(self, arm: Arm, view: memoryview, n: int) -> None:
        try:
            arm.sock.send(view)
        except OSError as exc:
            if exc.errno not in _TX_SOFT_ERRORS:
                raise
            arm.stats.tx_errors += 1
            return
        arm.stats.tx_packets += 1
        arm.stats.tx_bytes += n

    def _deliver(self, src: Arm, dst: Arm, n: int, now: float) -> None:
        """The slow path (recv mode, tagged frames): one frame through the function."""
        verdict, out = self.function.process(self._view, n, src.side, now)
        if verdict == Verdict.FORWARD:
            self._send(dst, self._view_of(out), out)
        elif verdict == Verdict.BOUNCE:
            self.bounced += 1
            self._send(src, self._view_of(out), out)
        else:
            self.dropped += 1

    def _drain_ring(self, src: Arm, dst: Arm) -> int:
        """Process one block of `src`'s ring if the kernel has handed it over.

        Written flat on purpose: locals instead of attributes, counters summed per block, send
        views from a cache. This loop is the VNF's packet rate.
        """
        u32 = src.u32
        base = src.blocks[src.cur]
        if u32 is None or not u32[(base >> 2) + _B_STATUS] & TP_STATUS_USER:
            return 0
        ring, u16, view = src.mv, src.u16, self._view
        views = self._views
        process = self.function.process
        side = src.side
        send_out, send_back = dst.sock.send, src.sock.send
        count = u32[(base >> 2) + _B_NUM_PKTS]
        pos = base + u32[(base >> 2) + _B_FIRST]
        now = time.monotonic()
        rx = rx_bytes = fwd = fwd_bytes = back = back_bytes = dropped = errors = 0
        for _ in range(count):
            i = pos >> 2
            snap = u32[i + _H_SNAPLEN]
            status = u32[i + _H_STATUS]
            start = pos + u16[(pos >> 1) + _H_MAC]
            pos += u32[i + _H_NEXT]
            rx += 1
            rx_bytes += snap
            if (
                status & TP_STATUS_VLAN_VALID
                or snap != u32[i + _H_LEN]
                or ring[(i << 2) + _H_PKTTYPE] == PACKET_OUTGOING
            ):
                self._slow_frame(src, dst, i << 2, snap, status, start, now)
                continue
            view[:snap] = ring[start : start + snap]
            verdict, n = process(view, snap, side, now)
            v = views[n]
            if v is None:
                v = self._view_of(n)
            try:
                if verdict == 0:
                    send_out(v)
                    fwd += 1
                    fwd_bytes += n
                elif verdict == 2:
                    send_back(v)
                    back += 1
                    back_bytes += n
                else:
                    dropped += 1
            except OSError as exc:
                if exc.errno not in _TX_SOFT_ERRORS:
                    raise
                errors += 1
        u32[(base >> 2) + _B_STATUS] = TP_STATUS_KERNEL
        src.cur = (src.cur + 1) % len(src.blocks)
        s = src.stats
        s.rx_packets += rx
        s.rx_bytes += rx_bytes
        s.tx_packets += back
        s.tx_bytes += back_bytes
        d = dst.stats
        d.tx_packets += fwd
        d.tx_bytes += fwd_bytes
        d.tx_errors += errors
        self.dropped += dropped
        self.bounced += back
        return count or 1

    def _slow_frame(
        self, src: Arm, dst: Arm, pos: int, snap: int, status: int, start: int, now: float
    ) -> None:
        """A ring frame that needs care: outgoing, truncated, or with a stripped VLAN tag."""
        ring, u32, u16 = src.mv, src.u32, src.u16
        if ring[pos + _H_PKTTYPE] == PACKET_OUTGOING:
            src.stats.rx_packets -= 1  # not ours to count (pre-4.20 kernels only)
            src.stats.rx_bytes -= snap
        elif snap != u32[(pos >> 2) + _H_LEN]:
            src.stats.truncated += 1
        else:
            tpid = u16[(pos >> 1) + _H_VLAN_TPID]
            if not status & TP_STATUS_VLAN_TPID_VALID or not tpid:
                tpid = 0x8100
            view = self._view
            view[0:12] = ring[start : start + 12]
            struct.pack_into("!HH", self._scratch, 12, tpid, u32[(pos >> 2) + _H_VLAN_TCI] & 0xFFFF)
            view[16 : snap + 4] = ring[start + 12 : start + snap]
            self._deliver(src, dst, snap + 4, now)

    def _drain_recv(self, src: Arm, dst: Arm) -> int:
        """Receive up to RECV_BATCH frames from `src` without blocking."""
        sock, stats, view = src.sock, src.stats, self._view
        body = view[4:]
        anc_size = socket.CMSG_SPACE(_AUXDATA.size)
        now = time.monotonic()
        got = 0
        for _ in range(RECV_BATCH):
            try:
                n, anc, flags, _addr = sock.recvmsg_into([body], anc_size)
            except BlockingIOError:
                break
            got += 1
            stats.rx_packets += 1
            stats.rx_bytes += n
            if flags & socket.MSG_TRUNC:
                stats.truncated += 1
                continue
            tag = 0
            tpid = 0x8100
            for level, kind, data in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUXDATA.size:
                    status, _l, _s, _m, _n, tci, tp = _AUXDATA.unpack_from(data)
                    if status & TP_STATUS_VLAN_VALID:
                        tag = tci | 0x10000  # present even when the TCI is 0
                        if status & TP_STATUS_VLAN_TPID_VALID and tp:
                            tpid = tp
            if tag:
                view[0:12] = view[4:16]
                struct.pack_into("!HH", self._scratch, 12, tpid, tag & 0xFFFF)
                self._deliver(src, dst, n + 4, now)
            else:
                view[0:n] = view[4 : 4 + n]
                self._deliver(src, dst, n, now)
        return got
