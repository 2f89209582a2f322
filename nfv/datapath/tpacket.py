"""The VNF packet loop: frames in from two arms, through a function, out the other arm.

The receive and send paths (`mode`):

- `auto` (default): `xdp` where this machine has it, else `ring` (nfv.datapath.xsk).
- `xdp`: AF_XDP sockets on both arms sharing one UMEM, the loop in C (`_xsk.c`). A frame is
  received into a chunk of the UMEM and sent out of the other arm from that same chunk; the
  function's output is written back into it. Frames sent from Python (ticks) go by a plain
  packet socket. VLAN tags arrive in the frame, so there is no slow path.
- `ring`: a TPACKET_V2 RX ring mapped into the process. We walk the frames the kernel
  has handed over, up to RING_BATCH at a time, with integer reads on casted memoryviews, and hand
  each slot back with one store. What goes out is written into each arm's TX ring
  (PACKET_TX_RING) and handed to the kernel with one `send` per arm per batch, so the per-frame
  cost is the function call plus two copies in C. When nothing is ready the loop sleeps in
  `poll`, which the kernel wakes for the next frame: a lone frame is answered at once.
- `ring-py`: the same loop in Python. `ring` runs it in C (`nfv.datapath.compiled`) when the
  module is built and both arms have TX rings; the Python loop is the reference the C one is
  tested against, and what runs without it.
- `recv`: non-blocking `recvmsg_into` in batches; simpler and kept as a fallback and a yardstick.

Every way, each frame the function sees is first copied into one preallocated scratch buffer (a
memcpy in C). That gives functions a writable view with room beyond `length`, so a BOUNCE
reply may be longer than the frame that caused it (an ICMP error quoting a short packet), and it
is where a VLAN tag that the kernel stripped into metadata is put back, so the VNF stays
transparent to tagged traffic. Frames the kernel reports as outgoing are never received
(PACKET_IGNORE_OUTGOING, and the ring's packet type is checked too).

`function.tick(now)` runs about every `tick_interval` seconds; the frames it yields as
`(side, frame)` are sent out of arm `side`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from nfv.datapath.arms import (
    H_LEN,
    H_MAC,
    H_PKTTYPE,
    H_SNAPLEN,
    H_STATUS,
    H_VLAN_TCI,
    H_VLAN_TPID,
    PACKET_AUXDATA,
    PACKET_OUTGOING,
    SOL_PACKET,
    TP_STATUS_KERNEL,
    TP_STATUS_USER,
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    TX_SOFT_ERRORS,
    Arm,
    RingConfig,
    open_arm,
    open_send_socket,
)
from nfv.datapath.compiled import fast
from nfv.datapath.function import NetworkFunction, Side, Verdict
from nfv.datapath.xsk import KernelCounters, open_pair

_AUXDATA = struct.Struct("=IIIHHHH")  # status len snaplen mac net vlan_tci vlan_tpid
SCRATCH = 65536 + 4  # a frame can never be longer than the largest IP packet plus a tag
RECV_BATCH = 64
RING_BATCH = 256  # frames per arm before the other arm gets its turn and the TX rings are flushed
# auto: xdp where available, else ring; xdp: AF_XDP, the loop in C; ring: RX and TX rings, the
# loop in C where built; ring-py: the same in Python; ring-send: RX ring, one send per frame (the
# yardstick for the TX ring); recv: recvmsg_into batches and one send per frame.
MODES = ("auto", "xdp", "ring", "ring-py", "ring-send", "recv")


class Dataplane:
    """Moves frames between `ingress` and `egress` through `function` until `stop()`."""

    def __init__(
        self,
        function: NetworkFunction,
        ingress: str,
        egress: str,
        mode: str = "auto",
        ring: RingConfig | None = None,
        tick_interval: float = 0.1,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown dataplane mode {mode!r}")
        self.function = function
        self.tick_interval = tick_interval
        self.xsk: Any = None
        self.xdp_unavailable = ""  # why `auto` did not get AF_XDP
        self._xsk_counters = KernelCounters()
        if mode in ("auto", "xdp"):
            self.xsk, self.xdp_unavailable = open_pair(ingress, egress)
            if self.xsk is None and mode == "xdp":
                raise OSError(f"AF_XDP: {self.xdp_unavailable}")
            mode = "xdp" if self.xsk is not None else "ring"
        self.mode = mode
        # native: the driver runs the XDP program; generic: the kernel, on the skb, after it
        self.xdp_attach = "" if self.xsk is None else "generic" if self.xsk.generic else "native"
        self.arms: list[Arm] = []
        try:
            if self.xsk is not None:  # frames sent from Python (ticks) go by a plain socket
                self.arms = [Arm(ingress, Side.INGRESS, open_send_socket(ingress)),
                             Arm(egress, Side.EGRESS, open_send_socket(egress))]  # fmt: skip
            else:
                ring_cfg = None if mode == "recv" else ring or RingConfig()
                if mode == "ring-send":
                    ring_cfg = replace(ring_cfg, tx_frames=0)
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
        if self.xsk is not None:
            self.xsk.close()

    def stats(self) -> dict[str, dict[str, int]]:
        for arm in self.arms:
            if self.xsk is not None:
                self._xsk_counters.fold(self.xsk, arm)
            else:
                arm.kernel_stats()
        return {arm.side.name.lower(): arm.stats.as_dict() for arm in self.arms}

    # --- the loop ------------------------------------------------------------------------------

    def run(self, on_tick: Callable[[float], None] | None = None) -> None:
        """Forward until `stop()`; `on_tick(now)` runs after each function tick."""
        self._running = True
        poller = select.poll()
        for arm in self.arms:
            fd = self.xsk.fileno(arm.side) if self.xsk is not None else arm.sock.fileno()
            poller.register(fd, select.POLLIN | select.POLLERR)
        ingress, egress = self.arms
        drain = (self._drain_xdp if self.xsk is not None
                 else self._drain_recv if self.mode == "recv"
                 else self._drain_fast if self.compiled else self._drain_ring)
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
            if arm.tx_base >= 0:  # every send of a socket with a TX ring goes through it
                arm.put(view)
                arm.flush()
            else:
                arm.sock.send(view)
        except OSError as exc:
            if exc.errno not in TX_SOFT_ERRORS:
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
        """Process the frames the kernel has handed over in `src`'s ring, up to RING_BATCH.

        Written flat on purpose: locals instead of attributes, counters summed per batch, send
        views from a cache. This loop is the VNF's packet rate.
        """
        u32 = src.u32
        if u32 is None:
            return 0
        ring, u16, view = src.mv, src.u16, self._view
        views = self._views
        process = self.function.process
        side = src.side
        send_out, send_back = self._sender(dst), self._sender(src)
        slot, slots, size = src.cur, src.rx_slots, src.slot_size
        now = time.monotonic()
        rx = rx_bytes = fwd = fwd_bytes = back = back_bytes = dropped = errors = 0
        while rx < RING_BATCH:
            pos = slot * size
            i = pos >> 2
            status = u32[i + H_STATUS]
            if not status & TP_STATUS_USER:
                break
            snap = u32[i + H_SNAPLEN]
            start = pos + u16[(pos >> 1) + H_MAC]
            slot += 1
            if slot == slots:
                slot = 0
            rx += 1
            rx_bytes += snap
            if (
                status & TP_STATUS_VLAN_VALID
                or snap != u32[i + H_LEN]
                or ring[pos + H_PKTTYPE] == PACKET_OUTGOING
            ):
                self._slow_frame(src, dst, pos, snap, status, start, now)
                u32[i + H_STATUS] = TP_STATUS_KERNEL
                continue
            view[:snap] = ring[start : start + snap]
            u32[i + H_STATUS] = TP_STATUS_KERNEL
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
                if exc.errno not in TX_SOFT_ERRORS:
                    raise
                errors += 1
        if not rx:
            return 0
        src.cur = slot
        dst.flush()
        src.flush()
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
        return rx

    @property
    def compiled(self) -> bool:
        """Whether `run` walks the rings in C."""
        return self.xsk is not None or (
            self.mode == "ring" and fast is not None and all(a.tx_base >= 0 for a in self.arms)
        )

    def _count(self, src: Arm, dst: Arm, rx: int, rx_bytes: int, fwd: int, fwd_bytes: int,
               back: int, back_bytes: int, dropped: int, errors: int) -> None:
        """Add a C drain's counters: `errors` are sends to `dst` that failed."""
        s, d = src.stats, dst.stats
        s.rx_packets += rx
        s.rx_bytes += rx_bytes
        s.tx_packets += back
        s.tx_bytes += back_bytes
        d.tx_packets += fwd
        d.tx_bytes += fwd_bytes
        d.tx_errors += errors
        self.dropped += dropped
        self.bounced += back

    def _drain_xdp(self, src: Arm, dst: Arm) -> int:
        """The frames in `src`'s AF_XDP RX ring, up to RING_BATCH, through the C loop."""
        counts = self.xsk.drain(src.side, self._scratch, self._view, self.function.process,
                                time.monotonic(), RING_BATCH,
                                getattr(self.function, "flow_cache", None))  # fmt: skip
        self._count(src, dst, *counts)
        return counts[0]

    def _drain_fast(self, src: Arm, dst: Arm) -> int:
        """`_drain_ring` in C (same counters); frames that need care are handed to
        `_slow_frame` one at a time. Only where `compiled` holds."""
        now = time.monotonic()
        (cur, src.tx_cur, dst.tx_cur, rx, rx_bytes, fwd, fwd_bytes, back, back_bytes, dropped,
         errors, src_wrong, dst_wrong, slow) = fast.drain(
            (src.mv, src.sock.fileno(), src.send_fd), (dst.mv, dst.sock.fileno(), dst.send_fd),
            src.cur, src.rx_slots,
            (src.tx_base, src.tx_slots, src.slot_size, src.tx_cur),
            (dst.tx_base, dst.tx_slots, dst.slot_size, dst.tx_cur),
            self._scratch, self._view, self.function.process, src.side, now, RING_BATCH,
            getattr(self.function, "flow_cache", None),
        )  # fmt: skip
        src.cur = cur
        src.stats.tx_errors += src_wrong
        self._count(src, dst, rx, rx_bytes, fwd, fwd_bytes, back, back_bytes, dropped,
                    errors + dst_wrong)
        if slow:
            rx += self._slow_slot(src, dst, now)
        return rx

    def _slow_slot(self, src: Arm, dst: Arm, now: float) -> int:
        """Take the frame in `src`'s current slot through `_slow_frame` and hand it back."""
        pos = src.cur * src.slot_size
        u32, i = src.u32, pos >> 2
        snap = u32[i + H_SNAPLEN]
        src.stats.rx_packets += 1
        src.stats.rx_bytes += snap
        start = pos + src.u16[(pos >> 1) + H_MAC]
        self._slow_frame(src, dst, pos, snap, u32[i + H_STATUS], start, now)
        u32[i + H_STATUS] = TP_STATUS_KERNEL
        src.cur = (src.cur + 1) % src.rx_slots
        dst.flush()
        src.flush()
        return 1

    @staticmethod
    def _sender(arm: Arm) -> Callable[[memoryview], object]:
        """Per-frame send for the ring loop: queue in the TX ring (flushed once per
        block), or one system call where there is no TX ring."""
        return arm.put if arm.tx_base >= 0 else arm.sock.send

    def _slow_frame(
        self, src: Arm, dst: Arm, pos: int, snap: int, status: int, start: int, now: float
    ) -> None:
        """A ring frame that needs care: outgoing, truncated, or with a stripped VLAN tag."""
        ring, u32, u16 = src.mv, src.u32, src.u16
        if ring[pos + H_PKTTYPE] == PACKET_OUTGOING:
            src.stats.rx_packets -= 1  # not ours to count (pre-4.20 kernels only)
            src.stats.rx_bytes -= snap
        elif snap != u32[(pos >> 2) + H_LEN]:
            src.stats.truncated += 1
        else:
            tpid = u16[(pos >> 1) + H_VLAN_TPID]
            if not status & TP_STATUS_VLAN_TPID_VALID or not tpid:
                tpid = 0x8100
            view = self._view
            view[0:12] = ring[start : start + 12]
            struct.pack_into("!HH", self._scratch, 12, tpid, u16[(pos >> 1) + H_VLAN_TCI])
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
