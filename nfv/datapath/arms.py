"""AF_PACKET arms of a VNF: the raw socket on each interface, its TPACKET_V3 RX ring and
TX ring mapped into the process, and their counters (the layout of linux/if_packet.h)."""

from __future__ import annotations

import contextlib
import errno
import mmap
import socket
import struct
from dataclasses import dataclass, field

from nfv.datapath.function import Side

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
PACKET_OUTGOING = 4

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
# TX ring slot states.
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_WRONG_FORMAT = 4
TX_DATA = 48  # a TX slot's frame starts after the 48-byte tpacket3_hdr
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40

# Offsets inside struct tpacket3_hdr (see linux/if_packet.h).
H_NEXT, H_SNAPLEN, H_LEN, H_STATUS = 0, 3, 4, 5  # in u32 units
H_MAC = 12  # u16 units (byte 24)
H_VLAN_TCI = 8  # u32 units (byte 32)
H_VLAN_TPID = 18  # u16 units (byte 36)
H_PKTTYPE = 48 + 10  # sockaddr_ll follows the 48-byte header; sll_pkttype is its byte 10
# Offsets inside the block descriptor, in u32 units.
B_STATUS, B_NUM_PKTS, B_FIRST = 2, 3, 4

STATS = struct.Struct("=II")  # packets drops (TPACKET_V3 appends freeze_q_cnt)
# Send failures that cost a frame but not the worker: queue full, too big, link down.
TX_SOFT_ERRORS = frozenset(
    (errno.ENOBUFS, errno.EAGAIN, errno.EMSGSIZE, errno.ENETDOWN, errno.ENXIO)
)


@dataclass
class RingConfig:
    """TPACKET_V3 geometry. 16 blocks of 1 MiB hold ~16k minimum-size frames per arm; a block
    is handed to us when full or after `timeout_ms`, which bounds the latency a frame sees."""

    block_size: int = 1 << 20
    block_count: int = 16
    frame_size: int = 2048
    timeout_ms: int = 1
    tx_frames: int = 1024  # TX ring slots of `frame_size` bytes per arm (2 MiB)


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
    tx_base: int = -1  # byte offset of the TX ring in `ring`; -1: no TX ring, plain send
    tx_slots: int = 0
    tx_slot_size: int = 0
    tx_cur: int = 0
    tx_queued: int = 0  # slots handed to the kernel since the last flush

    def put(self, frame: memoryview) -> None:
        """Queue `frame` in the next TX slot, as `socket.send` would send it: ENOBUFS when
        the ring is full (the kernel has not sent what the slot held), EMSGSIZE when the
        frame does not fit a slot."""
        slot = self.tx_base + self.tx_cur * self.tx_slot_size
        u32 = self.u32
        status = u32[(slot >> 2) + H_STATUS]
        if status == TP_STATUS_WRONG_FORMAT:
            self.stats.tx_errors += 1  # the kernel refused what the slot held
        elif status != TP_STATUS_AVAILABLE:
            self.flush()  # make room: the kernel sends what is queued
            if u32[(slot >> 2) + H_STATUS] not in (TP_STATUS_AVAILABLE, TP_STATUS_WRONG_FORMAT):
                raise OSError(errno.ENOBUFS, "TX ring full")
        n = len(frame)
        if n > self.tx_slot_size - TX_DATA:
            raise OSError(errno.EMSGSIZE, "frame larger than a TX slot")
        start = slot + TX_DATA
        self.mv[start:start + n] = frame
        u32[(slot >> 2) + H_LEN] = n
        u32[(slot >> 2) + H_STATUS] = TP_STATUS_SEND_REQUEST  # last: the slot is now theirs
        self.tx_cur = (self.tx_cur + 1) % self.tx_slots
        self.tx_queued += 1

    def flush(self) -> None:
        """Have the kernel send every queued slot (one system call, not waiting)."""
        if not self.tx_queued:
            return
        self.tx_queued = 0
        try:
            self.sock.send(b"", socket.MSG_DONTWAIT)
        except OSError as exc:
            if exc.errno not in TX_SOFT_ERRORS:
                raise

    def kernel_stats(self) -> None:
        """Fold the kernel's drop counter (reset on every read) into ours."""
        with contextlib.suppress(OSError):
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
            self.stats.kernel_drops += STATS.unpack_from(raw)[1]

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
    """The RX ring, then (where the kernel has TPACKET_V3 TX rings, 4.11+) the TX ring
    right after it in the same mapping."""
    sock = arm.sock
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
    frames = cfg.block_size // cfg.frame_size * cfg.block_count
    req = struct.pack(
        "=IIIIIII", cfg.block_size, cfg.block_count, cfg.frame_size, frames, cfg.timeout_ms, 0, 0
    )
    sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
    rx_size = cfg.block_size * cfg.block_count
    tx_size = cfg.frame_size * cfg.tx_frames
    try:
        if tx_size:
            sock.setsockopt(SOL_PACKET, PACKET_TX_RING, struct.pack(
                "=IIIIIII", tx_size, 1, cfg.frame_size, cfg.tx_frames, 0, 0, 0))
    except OSError:
        tx_size = 0  # an older kernel: frames go out with one send each
    if tx_size:
        # Not PACKET_QDISC_BYPASS: frames sent past the qdisc are invisible to tcpdump on
        # the arm, and seeing what a VNF sends is worth more than the few percent it saves.
        arm.tx_base, arm.tx_slots, arm.tx_slot_size = rx_size, cfg.tx_frames, cfg.frame_size
    arm.ring = mmap.mmap(sock.fileno(), rx_size + tx_size, mmap.MAP_SHARED,
                         mmap.PROT_READ | mmap.PROT_WRITE)
    arm.mv = memoryview(arm.ring)
    arm.u32 = arm.mv.cast("I")
    arm.u16 = arm.mv.cast("H")
    arm.blocks = [i * cfg.block_size for i in range(cfg.block_count)]
