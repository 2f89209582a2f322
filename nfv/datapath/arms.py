"""AF_PACKET arms of a VNF: the raw socket on each interface, its TPACKET_V2 RX ring and
TX ring mapped into the process, and their counters (the layout of linux/if_packet.h).

TPACKET_V2, not V3: a V3 ring hands frames over a block at a time, when the block fills or its
retire timer (at least 1 ms) runs out, so every frame at a low rate waited ~1 ms. A V2 ring hands
over each frame as it lands and wakes `poll` for it, and at a high rate the loop still finds
many frames ready at once: latency at low rates, batches at high rates, nothing to tune."""

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
TPACKET_V2 = 1
PACKET_OUTGOING = 4

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
# TX ring slot states.
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_WRONG_FORMAT = 4
TX_DATA = 32  # a TX slot's frame starts after the 32-byte tpacket2_hdr
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40

# Offsets inside struct tpacket2_hdr (see linux/if_packet.h).
H_STATUS, H_LEN, H_SNAPLEN = 0, 1, 2  # in u32 units
H_MAC = 6  # u16 units (byte 12)
H_VLAN_TCI, H_VLAN_TPID = 12, 13  # u16 units (bytes 24, 26)
H_PKTTYPE = 32 + 10  # sockaddr_ll follows the 32-byte header; sll_pkttype is its byte 10

STATS = struct.Struct("=II")  # packets drops
# Send failures that cost a frame but not the worker: queue full, too big, link down.
TX_SOFT_ERRORS = frozenset(
    (errno.ENOBUFS, errno.EAGAIN, errno.EMSGSIZE, errno.ENETDOWN, errno.ENXIO)
)


@dataclass
class RingConfig:
    """Ring geometry: `rx_frames` slots of `frame_size` bytes (8192 x 2 KiB = 16 MiB per arm,
    the size the kernel allocates in blocks of `block_size`), and `tx_frames` TX slots."""

    block_size: int = 1 << 20
    rx_frames: int = 8192
    frame_size: int = 2048
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
    rx_slots: int = 0
    slot_size: int = 0  # bytes per RX and TX slot
    cur: int = 0  # the next RX slot to read
    tx_base: int = -1  # byte offset of the TX ring in `ring`; -1: no TX ring, plain send
    tx_slots: int = 0
    tx_cur: int = 0
    tx_queued: int = 0  # slots handed to the kernel since the last flush
    # A second socket on the interface that only sends, without a ring: the C loop sends
    # full-size frames through it (see _fast.c); None where there is no TX ring.
    send_sock: socket.socket | None = None

    @property
    def send_fd(self) -> int:
        return self.send_sock.fileno() if self.send_sock is not None else -1

    def put(self, frame: memoryview) -> None:
        """Queue `frame` in the next TX slot, as `socket.send` would send it: ENOBUFS when
        the ring is full (the kernel has not sent what the slot held), EMSGSIZE when the
        frame does not fit a slot."""
        slot = self.tx_base + self.tx_cur * self.slot_size
        u32 = self.u32
        status = u32[(slot >> 2) + H_STATUS]
        if status == TP_STATUS_WRONG_FORMAT:
            self.stats.tx_errors += 1  # the kernel refused what the slot held
        elif status != TP_STATUS_AVAILABLE:
            self.flush()  # make room: the kernel sends what is queued
            if u32[(slot >> 2) + H_STATUS] not in (TP_STATUS_AVAILABLE, TP_STATUS_WRONG_FORMAT):
                raise OSError(errno.ENOBUFS, "TX ring full")
        n = len(frame)
        if n > self.slot_size - TX_DATA:
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
        if self.send_sock is not None:
            self.send_sock.close()
            self.send_sock = None
        self.sock.close()


def open_send_socket(name: str) -> socket.socket:
    """A packet socket on `name` that sends and never receives (protocol 0)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        sock.bind((name, 0))
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


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
        if arm.tx_base >= 0:
            arm.send_sock = open_send_socket(name)
        return arm
    except BaseException:
        sock.close()
        raise


def _setup_ring(arm: Arm, cfg: RingConfig) -> None:
    """The RX ring, then the TX ring right after it in the same mapping (where the kernel
    refuses a TX ring, frames go out with one `send` each)."""
    sock = arm.sock
    sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
    per_block = cfg.block_size // cfg.frame_size
    blocks = -(-cfg.rx_frames // per_block)
    rx_frames = blocks * per_block
    sock.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack(
        "=IIII", cfg.block_size, blocks, cfg.frame_size, rx_frames))
    rx_size = cfg.block_size * blocks
    tx_size = cfg.frame_size * cfg.tx_frames
    try:
        if tx_size:
            sock.setsockopt(SOL_PACKET, PACKET_TX_RING, struct.pack(
                "=IIII", tx_size, 1, cfg.frame_size, cfg.tx_frames))
    except OSError:
        tx_size = 0
    if tx_size:
        # Not PACKET_QDISC_BYPASS: frames sent past the qdisc are invisible to tcpdump on
        # the arm, and seeing what a VNF sends is worth more than the few percent it saves.
        arm.tx_base, arm.tx_slots = rx_size, cfg.tx_frames
    arm.rx_slots, arm.slot_size = rx_frames, cfg.frame_size
    arm.ring = mmap.mmap(sock.fileno(), rx_size + tx_size, mmap.MAP_SHARED,
                         mmap.PROT_READ | mmap.PROT_WRITE)
    arm.mv = memoryview(arm.ring)
    arm.u32 = arm.mv.cast("I")
    arm.u16 = arm.mv.cast("H")
