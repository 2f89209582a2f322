/* The VNF hot path in C; each function has a Python twin that is the reference.
 *
 * drain: nfv.datapath.tpacket.Dataplane._drain_ring without the interpreter. Walks the frames the
 * kernel has handed over in an arm's TPACKET_V2 RX ring, copies each into the scratch buffer,
 * calls the function's `process(view, length, side, now)` and queues what it returns for the arm
 * the verdict names; sends what is queued once at the end. Small frames are queued in the arm's
 * TX ring; frames of LINEAR_MIN bytes or more are copied aside and sent with one sendmmsg on the
 * arm's plain send socket, because a TX ring frame's data stays in the ring's pages and a veth
 * must copy it again (skb_copy_ubufs) before the frame can cross into another namespace: for
 * full-size TCP segments that second copy and its page allocation cost ~9 % of the throughput.
 * Switching between the two flushes what the other holds first, so a direction's order holds.
 * The Python loop in tpacket.py is the reference: same frames, same verdicts, same counters
 * (tests/integration/test_fast_ring.py runs both on the same frames). Frames that need care (a
 * stripped VLAN tag, truncated, outgoing) are left in the ring for the Python side: the walk stops
 * there.
 *
 * Parser: nfv.datapath.packet.PyParser field for field (tests/unit/test_fast.py compares them on
 * generated and fuzzed frames): the same attributes, the same status codes.
 *
 * XskPair (_xsk.c, where libxdp was there to build it): the same loop over AF_XDP sockets.
 *
 * nat: nfv.datapath.rewrite.nat_ipv4_py on a C Parser: the IPv4 address + port rewrite with RFC
 * 1624 checksum updates, step for step as the Python does it, so the bytes are identical
 * (tests/unit/test_fast.py).
 */
#include "_fast.h"

#include <structmember.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* struct tpacket2_hdr (linux/if_packet.h) and the sockaddr_ll after it. */
#define H_STATUS 0
#define H_LEN 4
#define H_SNAPLEN 8
#define H_MAC 12
#define H_PKTTYPE (32 + 10)
#define TX_DATA 32
#define TP_STATUS_KERNEL 0u
#define TP_STATUS_USER 1u
#define TP_STATUS_VLAN_VALID 0x10u
#define TP_STATUS_AVAILABLE 0u
#define TP_STATUS_SEND_REQUEST 1u
#define TP_STATUS_WRONG_FORMAT 4u
#define PACKET_OUTGOING 4

#define LINEAR_MIN 512  /* frames this size or larger go by sendmmsg (see the top) */
#define LINEAR_FRAME 2048
#define LINEAR_BATCH 64

/* The frames a direction has queued by sendmmsg, waiting for the next flush. */
typedef struct {
    uint8_t data[LINEAR_BATCH][LINEAR_FRAME];
    struct iovec iov[LINEAR_BATCH];
    struct mmsghdr msgs[LINEAR_BATCH];
} linear_batch;

typedef struct {
    uint8_t *base;
    int fd, send_fd; /* send_fd: a plain socket on the same interface, -1 for none */
    Py_ssize_t tx_base;
    uint32_t tx_slots, slot_size, tx_cur, queued, wrong_format;
    int linear;                    /* whether what is queued is in `batch`, not the ring */
    linear_batch *batch;
    unsigned long long lost, lost_bytes; /* queued by sendmmsg, then refused by the kernel */
} tx_ring;

static linear_batch batches[2]; /* one per direction of a drain (the worker has one thread) */

static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

static inline void wr32_release(uint8_t *p, uint32_t v) {
    __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE);
}

static inline uint32_t rd32_acquire(const uint8_t *p) {
    return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE);
}

static int soft_error(int e) {
    return e == ENOBUFS || e == EAGAIN || e == EMSGSIZE || e == ENETDOWN || e == ENXIO;
}

/* Send the frames queued by sendmmsg; those the kernel refuses are counted lost. */
static int flush_linear(tx_ring *t) {
    unsigned int done = 0, k = t->queued;
    t->queued = 0;
    while (done < k) {
        int r = sendmmsg(t->send_fd, t->batch->msgs + done, k - done, MSG_DONTWAIT);
        if (r > 0) {
            done += (unsigned int)r;
            continue;
        }
        if (r < 0 && !soft_error(errno)) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        t->lost++; /* this one failed softly: skip it, try the rest */
        t->lost_bytes += t->batch->iov[done].iov_len;
        done++;
    }
    return 0;
}

/* Have the kernel send everything queued. 0, or -1 with a Python error set. */
static int flush(tx_ring *t) {
    if (!t->queued) return 0;
    if (t->linear) return flush_linear(t);
    t->queued = 0;
    if (send(t->fd, NULL, 0, MSG_DONTWAIT) < 0 && !soft_error(errno)) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static int put_linear(tx_ring *t, const uint8_t *frame, uint32_t n) {
    if (t->queued == LINEAR_BATCH && flush_linear(t) < 0) return -1;
    uint32_t i = t->queued++;
    linear_batch *b = t->batch;
    memcpy(b->data[i], frame, n);
    b->iov[i].iov_len = n;
    return 0;
}

/* Queue `n` bytes of `frame`: 0 sent, 1 a soft error (the frame is lost), -1 a Python error. */
static int put(tx_ring *t, const uint8_t *frame, uint32_t n) {
    if (n > t->slot_size - TX_DATA) return 1; /* EMSGSIZE either way: the same bound as a slot */
    int linear = n >= LINEAR_MIN && n <= LINEAR_FRAME && t->send_fd >= 0;
    if (linear != t->linear) {
        if (flush(t) < 0) return -1;
        t->linear = linear;
    }
    if (linear) return put_linear(t, frame, n);
    uint8_t *slot = t->base + t->tx_base + (Py_ssize_t)t->tx_cur * t->slot_size;
    uint32_t status = rd32_acquire(slot + H_STATUS);
    if (status == TP_STATUS_WRONG_FORMAT) {
        t->wrong_format++;
    } else if (status != TP_STATUS_AVAILABLE) {
        if (flush(t) < 0) return -1;
        status = rd32_acquire(slot + H_STATUS);
        if (status != TP_STATUS_AVAILABLE && status != TP_STATUS_WRONG_FORMAT) return 1;
    }
    memcpy(slot + TX_DATA, frame, n);
    memcpy(slot + H_LEN, &n, 4);
    wr32_release(slot + H_STATUS, TP_STATUS_SEND_REQUEST);
    t->tx_cur = (t->tx_cur + 1) % t->tx_slots;
    t->queued++;
    return 0;
}

static int get_ring(PyObject *mv, Py_buffer *view) {
    return PyObject_GetBuffer(mv, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS);
}

PyDoc_STRVAR(drain_doc,
"drain(src, dst, cur, rx_slots, src_tx, dst_tx, scratch, view, process, side, now, batch, cache)\n"
"src/dst: (writable buffer of the arm's mapping, fd, send fd or -1); src_tx/dst_tx: (tx_base, tx_slots,\n"
"slot_size, tx_cur). Returns (cur, src_tx_cur, dst_tx_cur, rx, rx_bytes, fwd, fwd_bytes,\n"
"back, back_bytes, dropped, errors, src_wrong_format, dst_wrong_format, slow), `slow` true\n"
"when the walk stopped at a frame the Python side must handle. `cache`: the function's\n"
"FlowCache or None; frames it takes are forwarded without calling `process`.");

static PyObject *drain(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *src_mv, *dst_mv, *scratch_obj, *view, *process, *side, *now, *cache;
    int src_fd, dst_fd, src_send_fd, dst_send_fd;
    unsigned int cur, rx_slots, batch;
    Py_ssize_t src_tx_base, dst_tx_base;
    unsigned int src_tx_slots, dst_tx_slots, slot_size, src_tx_cur, dst_tx_cur;
    if (!PyArg_ParseTuple(args, "(Oii)(Oii)II(nIII)(nIII)OOOOOIO:drain", &src_mv, &src_fd,
                          &src_send_fd, &dst_mv, &dst_fd, &dst_send_fd, &cur, &rx_slots,
                          &src_tx_base, &src_tx_slots, &slot_size, &src_tx_cur, &dst_tx_base,
                          &dst_tx_slots, &slot_size, &dst_tx_cur,
                          &scratch_obj, &view, &process, &side, &now, &batch, &cache))
        return NULL;
    int cache_ok;
    cache = fast_cache_arg(cache, &cache_ok);
    if (!cache_ok) return NULL;
    double now_s = PyFloat_AsDouble(now);
    long side_n = PyLong_AsLong(side);
    if (PyErr_Occurred()) return NULL;
    Py_buffer sbuf, dbuf, scratch;
    if (get_ring(src_mv, &sbuf) < 0) return NULL;
    if (get_ring(dst_mv, &dbuf) < 0) { PyBuffer_Release(&sbuf); return NULL; }
    if (get_ring(scratch_obj, &scratch) < 0) {
        PyBuffer_Release(&sbuf);
        PyBuffer_Release(&dbuf);
        return NULL;
    }
    PyObject *result = NULL;
    uint8_t *ring = sbuf.buf;
    uint8_t *scr = scratch.buf;
    tx_ring out = {dbuf.buf, dst_fd, dst_send_fd, dst_tx_base, dst_tx_slots, slot_size,
                   dst_tx_cur, 0, 0, 0, &batches[0], 0, 0};
    tx_ring back = {sbuf.buf, src_fd, src_send_fd, src_tx_base, src_tx_slots, slot_size,
                    src_tx_cur, 0, 0, 0, &batches[1], 0, 0};
    unsigned long long rx = 0, rx_bytes = 0, fwd = 0, fwd_bytes = 0, nback = 0, back_bytes = 0;
    unsigned long long dropped = 0, errors = 0;
    int slow = 0;
    if (rx_slots == 0 || slot_size < 64 || (Py_ssize_t)rx_slots * slot_size > sbuf.len ||
        src_tx_base + (Py_ssize_t)src_tx_slots * slot_size > sbuf.len ||
        dst_tx_base + (Py_ssize_t)dst_tx_slots * slot_size > dbuf.len || !src_tx_slots ||
        !dst_tx_slots || cur >= rx_slots || src_tx_cur >= src_tx_slots ||
        dst_tx_cur >= dst_tx_slots) {
        PyErr_SetString(PyExc_ValueError, "drain: ring geometry does not fit the mapping");
        goto done;
    }
    PyObject *argv[4] = {view, NULL, side, now};
    while (rx < batch) {
        uint8_t *hdr = ring + (Py_ssize_t)cur * slot_size;
        uint32_t status = rd32_acquire(hdr + H_STATUS);
        if (!(status & TP_STATUS_USER)) break;
        uint32_t snap = rd32(hdr + H_SNAPLEN);
        uint32_t mac = rd16(hdr + H_MAC);
        if ((status & TP_STATUS_VLAN_VALID) || snap != rd32(hdr + H_LEN) ||
            hdr[H_PKTTYPE] == PACKET_OUTGOING || mac + snap > slot_size ||
            (Py_ssize_t)snap > scratch.len) {
            slow = 1;
            break;
        }
        uint8_t *frame = hdr + mac;
        int hit = cache != NULL ? fast_cache_lookup(cache, frame, snap, side_n, now_s) : 0;
        if (hit < 0) goto done;
        long verdict = 0, n = snap;
        int rc = 0;
        if (hit) /* forwarded as it is, queued straight from the RX slot before it goes back */
            rc = put(&out, frame, snap);
        else
            memcpy(scr, frame, snap);
        wr32_release(hdr + H_STATUS, TP_STATUS_KERNEL);
        cur = cur + 1 == rx_slots ? 0 : cur + 1;
        rx++;
        rx_bytes += snap;
        if (!hit) {
            if (fast_process(process, argv, snap, scratch.len, cache, &verdict, &n) < 0)
                goto done;
            if (verdict == 1) {
                dropped++;
                continue;
            }
            rc = put(verdict == 0 ? &out : &back, scr, (uint32_t)n);
        }
        if (rc < 0) goto done;
        if (rc > 0) {
            errors++;
        } else if (verdict == 0) {
            fwd++;
            fwd_bytes += (unsigned long long)n;
        } else {
            nback++;
            back_bytes += (unsigned long long)n;
        }
    }
    if (flush(&out) < 0 || flush(&back) < 0) goto done;
    fwd -= out.lost;
    fwd_bytes -= out.lost_bytes;
    nback -= back.lost;
    back_bytes -= back.lost_bytes;
    errors += out.lost + back.lost;
    result = Py_BuildValue("IIIKKKKKKKKIIi", cur, back.tx_cur, out.tx_cur, rx, rx_bytes, fwd,
                           fwd_bytes, nback, back_bytes, dropped, errors, back.wrong_format,
                           out.wrong_format, slow);
done:
    PyBuffer_Release(&scratch);
    PyBuffer_Release(&dbuf);
    PyBuffer_Release(&sbuf);
    return result;
}

/* RFC 1624 eqn. 3 (csum_replace16 / csum_replace32 in rewrite.py). */
static uint32_t fold2(uint32_t s) {
    s = (s & 0xFFFF) + (s >> 16);
    return (s & 0xFFFF) + (s >> 16);
}

static uint16_t replace16(uint16_t c, uint16_t old, uint16_t new_) {
    return (uint16_t)(fold2((uint32_t)(c ^ 0xFFFF) + (old ^ 0xFFFFu) + new_) ^ 0xFFFF);
}

static uint16_t replace32(uint16_t c, uint32_t old, uint32_t new_) {
    uint32_t s = (uint32_t)(c ^ 0xFFFF) + ((old >> 16) ^ 0xFFFF) + ((old & 0xFFFF) ^ 0xFFFF) +
                 (new_ >> 16) + (new_ & 0xFFFF);
    return (uint16_t)(fold2(s) ^ 0xFFFF);
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

/* rewrite._fix_l4: one field of the L4 checksum; UDP's "no checksum" 0 stays 0. */
static void fix_l4(uint8_t *c_at, int udp, int wide, uint32_t old, uint32_t new_) {
    uint16_t c = get16(c_at);
    if (udp && c == 0) return;
    c = wide ? replace32(c, old, new_) : replace16(c, (uint16_t)old, (uint16_t)new_);
    if (udp && c == 0) c = 0xFFFF;
    put16(c_at, c);
}

/* ---- Parser ---------------------------------------------------------------------------------- */

enum {
    F_ARP_OP, F_ARP_SPA, F_ARP_TPA, F_DPORT, F_DST, F_ETH_TYPE, F_FRAG, F_FRAG_ID, F_ICMP_CODE,
    F_ICMP_ID, F_ICMP_TYPE, F_INNER_DPORT, F_INNER_DST, F_INNER_OK, F_INNER_PROTO, F_INNER_SPORT,
    F_INNER_SRC, F_IP_HLEN, F_IP_LEN, F_IP_VER, F_L3_OFF, F_L4_LEN, F_L4_OFF, F_LENGTH,
    F_PAYLOAD_LEN, F_PAYLOAD_OFF, F_PROTO, F_SPORT, F_SRC, F_TCP_ACK, F_TCP_FLAGS, F_TCP_SEQ,
    F_TCP_WIN, F_TTL, F_VLAN_COUNT, F_VLAN_TCI, F_VLAN_TCI2, N_FIELDS
};
static const char *const field_names[N_FIELDS] = {
    "arp_op", "arp_spa", "arp_tpa", "dport", "dst", "eth_type", "frag", "frag_id", "icmp_code",
    "icmp_id", "icmp_type", "inner_dport", "inner_dst", "inner_ok", "inner_proto",
    "inner_sport", "inner_src", "ip_hlen", "ip_len", "ip_ver", "l3_off", "l4_len", "l4_off",
    "length", "payload_len", "payload_off", "proto", "sport", "src", "tcp_ack", "tcp_flags",
    "tcp_seq", "tcp_win", "ttl", "vlan_count", "vlan_tci", "vlan_tci2",
};

enum { OK, TRUNCATED, TOO_MANY_TAGS, BAD_IP_VERSION, BAD_IP_HEADER, BAD_IP_LENGTH,
       BAD_EXT_HEADER, BAD_L4_HEADER };
enum { FRAG_NONE, FRAG_FIRST, FRAG_LATER };
#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ICMPV6 58

/* One parse's values; addresses are 128 bits (hi, lo) so that IPv6 fits. */
typedef struct {
    uint64_t v[N_FIELDS];
    uint64_t hi[N_FIELDS]; /* upper 64 bits of src, dst, inner_src, inner_dst */
    const uint8_t *b;
    Py_ssize_t len;
} parse_t;

typedef struct {
    PyObject_HEAD
    PyObject *f[N_FIELDS];
} ParserObject;

static inline uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

static int is_tag(unsigned et) { return et == 0x8100 || et == 0x88A8; }

static void later_fragment(parse_t *r, Py_ssize_t off, Py_ssize_t end) {
    r->v[F_L4_OFF] = r->v[F_PAYLOAD_OFF] = (uint64_t)off;
    r->v[F_L4_LEN] = r->v[F_PAYLOAD_LEN] = (uint64_t)(end - off);
    r->v[F_SPORT] = r->v[F_DPORT] = 0;
}

static void inner(parse_t *r, Py_ssize_t off, Py_ssize_t end) {
    const uint8_t *b = r->b;
    Py_ssize_t avail = end - off, pos;
    unsigned proto;
    uint64_t src_hi = 0, src_lo, dst_hi = 0, dst_lo;
    if (avail < 1) return;
    unsigned ver = b[off] >> 4;
    if (ver == 4 && r->v[F_PROTO] == PROTO_ICMP) {
        if (avail < 20) return;
        unsigned frag = get16(b + off + 6);
        proto = b[off + 9];
        src_lo = be32(b + off + 12);
        dst_lo = be32(b + off + 16);
        pos = off + ((b[off] & 0x0F) << 2);
        if (pos < off + 20 || (frag & 0x1FFF)) return;
    } else if (ver == 6 && r->v[F_PROTO] == PROTO_ICMPV6) {
        if (avail < 40) return;
        proto = b[off + 6];
        src_hi = be64(b + off + 8);
        src_lo = be64(b + off + 16);
        dst_hi = be64(b + off + 24);
        dst_lo = be64(b + off + 32);
        pos = off + 40;
    } else {
        return;
    }
    if (end - pos < 8) return;
    if (proto == PROTO_TCP || proto == PROTO_UDP) {
        r->v[F_INNER_SPORT] = get16(b + pos);
        r->v[F_INNER_DPORT] = get16(b + pos + 2);
    } else if (proto == PROTO_ICMP || proto == PROTO_ICMPV6) {
        r->v[F_INNER_SPORT] = r->v[F_INNER_DPORT] = get16(b + pos + 4);
    }
    r->hi[F_INNER_SRC] = src_hi;
    r->v[F_INNER_SRC] = src_lo;
    r->hi[F_INNER_DST] = dst_hi;
    r->v[F_INNER_DST] = dst_lo;
    r->v[F_INNER_PROTO] = proto;
    r->v[F_INNER_OK] = 1;
}

static int l4(parse_t *r, Py_ssize_t off, Py_ssize_t end, unsigned proto) {
    const uint8_t *b = r->b;
    Py_ssize_t avail = end - off;
    r->v[F_L4_OFF] = (uint64_t)off;
    r->v[F_L4_LEN] = (uint64_t)avail;
    if (proto == PROTO_TCP) {
        if (avail < 20) return TRUNCATED;
        Py_ssize_t hl = (b[off + 12] >> 4) << 2;
        if (hl < 20 || hl > avail) return BAD_L4_HEADER;
        r->v[F_SPORT] = get16(b + off);
        r->v[F_DPORT] = get16(b + off + 2);
        r->v[F_TCP_SEQ] = be32(b + off + 4);
        r->v[F_TCP_ACK] = be32(b + off + 8);
        r->v[F_TCP_FLAGS] = b[off + 13];
        r->v[F_TCP_WIN] = get16(b + off + 14);
        r->v[F_PAYLOAD_OFF] = (uint64_t)(off + hl);
        r->v[F_PAYLOAD_LEN] = (uint64_t)(avail - hl);
        return OK;
    }
    if (proto == PROTO_UDP) {
        if (avail < 8) return TRUNCATED;
        Py_ssize_t ulen = get16(b + off + 4);
        if (ulen > avail && r->v[F_FRAG] == FRAG_FIRST) ulen = avail;
        if (ulen < 8 || ulen > avail) return BAD_L4_HEADER;
        r->v[F_SPORT] = get16(b + off);
        r->v[F_DPORT] = get16(b + off + 2);
        r->v[F_PAYLOAD_OFF] = (uint64_t)(off + 8);
        r->v[F_PAYLOAD_LEN] = (uint64_t)(ulen - 8);
        return OK;
    }
    if (proto == PROTO_ICMP || proto == PROTO_ICMPV6) {
        if (avail < 8) return TRUNCATED;
        unsigned type = b[off], ident = get16(b + off + 4);
        r->v[F_SPORT] = r->v[F_DPORT] = 0;
        r->v[F_ICMP_TYPE] = type;
        r->v[F_ICMP_CODE] = b[off + 1];
        r->v[F_PAYLOAD_OFF] = (uint64_t)(off + 8);
        r->v[F_PAYLOAD_LEN] = (uint64_t)(avail - 8);
        int has_id, error;
        if (proto == PROTO_ICMP) {
            has_id = type == 0 || type == 8 || (type >= 13 && type <= 18);
            error = type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
        } else {
            has_id = type == 128 || type == 129;
            error = type >= 1 && type <= 4;
        }
        if (has_id)
            r->v[F_ICMP_ID] = r->v[F_SPORT] = r->v[F_DPORT] = ident;
        else if (error)
            inner(r, off + 8, end);
        return OK;
    }
    r->v[F_SPORT] = r->v[F_DPORT] = 0;
    r->v[F_PAYLOAD_OFF] = (uint64_t)off;
    r->v[F_PAYLOAD_LEN] = (uint64_t)avail;
    return OK;
}

static int ipv4(parse_t *r, Py_ssize_t off, Py_ssize_t length) {
    const uint8_t *b = r->b;
    if (length - off < 20) return TRUNCATED;
    if (b[off] >> 4 != 4) return BAD_IP_VERSION;
    Py_ssize_t hlen = (b[off] & 0x0F) << 2;
    if (hlen < 20) return BAD_IP_HEADER;
    Py_ssize_t tot = get16(b + off + 2);
    if (tot < hlen) return BAD_IP_LENGTH;
    if (tot > length - off) return TRUNCATED;
    unsigned frag = get16(b + off + 6), proto = b[off + 9];
    r->v[F_IP_VER] = 4;
    r->v[F_SRC] = be32(b + off + 12);
    r->v[F_DST] = be32(b + off + 16);
    r->v[F_PROTO] = proto;
    r->v[F_TTL] = b[off + 8];
    r->v[F_IP_HLEN] = (uint64_t)hlen;
    r->v[F_IP_LEN] = (uint64_t)tot;
    if (frag & 0x3FFF) {
        r->v[F_FRAG_ID] = get16(b + off + 4);
        if (frag & 0x1FFF) {
            r->v[F_FRAG] = FRAG_LATER;
            later_fragment(r, off + hlen, off + tot);
            return OK;
        }
        r->v[F_FRAG] = FRAG_FIRST;
    }
    return l4(r, off + hlen, off + tot, proto);
}

static int ipv6(parse_t *r, Py_ssize_t off, Py_ssize_t length) {
    const uint8_t *b = r->b;
    if (length - off < 40) return TRUNCATED;
    if (b[off] >> 4 != 6) return BAD_IP_VERSION;
    Py_ssize_t end = off + 40 + get16(b + off + 4);
    if (end > length) return TRUNCATED;
    unsigned nxt = b[off + 6];
    r->v[F_IP_VER] = 6;
    r->hi[F_SRC] = be64(b + off + 8);
    r->v[F_SRC] = be64(b + off + 16);
    r->hi[F_DST] = be64(b + off + 24);
    r->v[F_DST] = be64(b + off + 32);
    r->v[F_TTL] = b[off + 7];
    r->v[F_IP_LEN] = (uint64_t)(end - off);
    Py_ssize_t pos = off + 40;
    int i;
    for (i = 0; i < 8; i++) {
        if (nxt == 0 || nxt == 43 || nxt == 60 || nxt == 135 || nxt == 139 || nxt == 140) {
            if (end - pos < 8) return BAD_EXT_HEADER;
            unsigned hl = b[pos + 1];
            nxt = b[pos];
            pos += (Py_ssize_t)(hl + 1) << 3;
        } else if (nxt == 51) {
            if (end - pos < 8) return BAD_EXT_HEADER;
            unsigned hl = b[pos + 1];
            nxt = b[pos];
            pos += (Py_ssize_t)(hl + 2) << 2;
        } else if (nxt == 44) {
            if (end - pos < 8) return BAD_EXT_HEADER;
            unsigned fo = get16(b + pos + 2);
            r->v[F_FRAG_ID] = be32(b + pos + 4);
            nxt = b[pos];
            pos += 8;
            if (fo & 0xFFF8)
                r->v[F_FRAG] = FRAG_LATER;
            else if (fo & 1)
                r->v[F_FRAG] = FRAG_FIRST;
        } else {
            break;
        }
        if (pos > end) return BAD_EXT_HEADER;
    }
    if (i == 8) return BAD_EXT_HEADER;
    r->v[F_PROTO] = nxt;
    r->v[F_IP_HLEN] = (uint64_t)(pos - off);
    if (r->v[F_FRAG] == FRAG_LATER) {
        later_fragment(r, pos, end);
        return OK;
    }
    return l4(r, pos, end, nxt);
}

static int parse_frame(parse_t *r, Py_ssize_t length) {
    const uint8_t *b = r->b;
    if (length > r->len) length = r->len;
    r->v[F_LENGTH] = length < 0 ? 0 : (uint64_t)length;
    if (length < 14) return TRUNCATED;
    unsigned et = get16(b + 12);
    Py_ssize_t off = 14;
    if (is_tag(et)) {
        if (length < 18) return TRUNCATED;
        r->v[F_VLAN_TCI] = get16(b + 14);
        et = get16(b + 16);
        off = 18;
        r->v[F_VLAN_COUNT] = 1;
        if (is_tag(et)) {
            if (length < 22) return TRUNCATED;
            r->v[F_VLAN_TCI2] = get16(b + 18);
            et = get16(b + 20);
            off = 22;
            r->v[F_VLAN_COUNT] = 2;
            if (is_tag(et)) return TOO_MANY_TAGS;
        }
    }
    r->v[F_ETH_TYPE] = et;
    r->v[F_L3_OFF] = (uint64_t)off;
    if (et == 0x0800 || et == 0x86DD) {
        int status = et == 0x0800 ? ipv4(r, off, length) : ipv6(r, off, length);
        if (status) r->v[F_IP_VER] = 0;
        return status;
    }
    if (et == 0x0806) {
        if (length - off < 28) return TRUNCATED;
        if (get16(b + off) == 1 && get16(b + off + 2) == 0x0800 && b[off + 4] == 6 &&
            b[off + 5] == 4) {
            r->v[F_ARP_OP] = get16(b + off + 6);
            r->v[F_ARP_SPA] = be32(b + off + 14);
            r->v[F_ARP_TPA] = be32(b + off + 24);
        }
    }
    return OK;
}

static int is_address(int i) {
    return i == F_SRC || i == F_DST || i == F_INNER_SRC || i == F_INNER_DST;
}

/* Store the parse's values as ints; a field whose value did not change keeps its object. */
static int publish(ParserObject *self, const parse_t *r) {
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *cur = self->f[i], *obj;
        uint64_t v = r->v[i];
        if (i == F_INNER_OK) {
            obj = Py_NewRef(v ? Py_True : Py_False);
        } else if (r->hi[i] && is_address(i)) {
            uint8_t be[16];
            for (int k = 0; k < 8; k++) {
                be[k] = (uint8_t)(r->hi[i] >> (56 - 8 * k));
                be[8 + k] = (uint8_t)(v >> (56 - 8 * k));
            }
            obj = _PyLong_FromByteArray(be, 16, 0, 0);
        } else {
            if (v > 256 && cur != NULL && PyLong_CheckExact(cur)) {
                int overflow = 0;
                unsigned long long old = PyLong_AsUnsignedLongLong(cur);
                if (old == (unsigned long long)-1 && PyErr_Occurred()) {
                    PyErr_Clear();
                    overflow = 1;
                }
                if (!overflow && old == v) continue;
            }
            obj = PyLong_FromUnsignedLongLong(v);
        }
        if (obj == NULL) return -1;
        self->f[i] = obj;
        Py_XDECREF(cur);
    }
    return 0;
}

static PyObject *parser_parse(ParserObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse(buf, length)");
        return NULL;
    }
    Py_ssize_t length = PyLong_AsSsize_t(args[1]);
    if (length == -1 && PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    parse_t r;
    memset(r.v, 0, sizeof r.v);
    memset(r.hi, 0, sizeof r.hi);
    r.b = view.buf;
    r.len = view.len;
    int status = parse_frame(&r, length);
    PyBuffer_Release(&view);
    if (publish(self, &r) < 0) return NULL;
    return PyLong_FromLong(status);
}

static int parser_init(ParserObject *self, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Parser() takes no arguments");
        return -1;
    }
    parse_t r;
    memset(&r, 0, sizeof r);
    return publish(self, &r);
}

static int parser_traverse(ParserObject *self, visitproc visit, void *arg) {
    for (int i = 0; i < N_FIELDS; i++) Py_VISIT(self->f[i]);
    return 0;
}

static int parser_clear(ParserObject *self) {
    for (int i = 0; i < N_FIELDS; i++) Py_CLEAR(self->f[i]);
    return 0;
}

static void parser_dealloc(ParserObject *self) {
    PyObject_GC_UnTrack(self);
    parser_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef parser_methods[] = {
    {"parse", (PyCFunction)(void (*)(void))parser_parse, METH_FASTCALL,
     "parse(buf, length) -> status; the fields as nfv.datapath.packet documents them"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef parser_members[N_FIELDS + 1];

static PyTypeObject ParserType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nfv.datapath._fast.Parser",
    .tp_basicsize = sizeof(ParserObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "nfv.datapath.packet.PyParser in C: reusable, one per worker, not thread-safe.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)parser_init,
    .tp_dealloc = (destructor)parser_dealloc,
    .tp_traverse = (traverseproc)parser_traverse,
    .tp_clear = (inquiry)parser_clear,
    .tp_methods = parser_methods,
    .tp_members = parser_members,
};

/* The rewrite itself: the IPv4 source or destination address (and port) of the frame `buf` of
 * `n` bytes, the IPv4 and L4 checksums updated; -1, with nothing written, when the offsets do
 * not fit the buffer. */
static int nat_apply(uint8_t *buf, Py_ssize_t n, uint64_t l3, uint64_t l4off, uint64_t proto,
                     uint64_t frag, int dst, uint64_t old_ip, uint64_t old_port, uint64_t ip,
                     uint64_t port) {
    uint64_t addr_at = l3 + (dst ? 16 : 12), port_at = l4off + (dst ? 2 : 0);
    int64_t csum_at = -1;
    if (frag != FRAG_LATER && proto == PROTO_TCP) csum_at = (int64_t)(l4off + 16);
    if (frag != FRAG_LATER && proto == PROTO_UDP) csum_at = (int64_t)(l4off + 6);
    int change_port = port != old_port;
    if (addr_at + 4 > (uint64_t)n || l3 + 12 > (uint64_t)n || csum_at + 2 > (int64_t)n ||
        (change_port && port_at + 2 > (uint64_t)n))
        return -1;
    int udp = proto == PROTO_UDP;
    buf[addr_at] = (uint8_t)(ip >> 24);
    buf[addr_at + 1] = (uint8_t)(ip >> 16);
    buf[addr_at + 2] = (uint8_t)(ip >> 8);
    buf[addr_at + 3] = (uint8_t)ip;
    put16(buf + l3 + 10, replace32(get16(buf + l3 + 10), (uint32_t)old_ip, (uint32_t)ip));
    if (csum_at >= 0) fix_l4(buf + csum_at, udp, 1, (uint32_t)old_ip, (uint32_t)ip);
    if (change_port) {
        put16(buf + port_at, (uint16_t)port);
        if (csum_at >= 0) fix_l4(buf + csum_at, udp, 0, (uint32_t)old_port, (uint32_t)port);
    }
    return 0;
}

/* ---- FlowCache ------------------------------------------------------------------------------- */

/* Established TCP connections the C loop handles without calling the function. A hit does on the
 * conntrack Entry itself what ConnTrack._tcp's first branch does for a segment of an established
 * connection with only ACK among SYN/ACK/FIN/RST (the direction's sequence end, the packet and
 * byte counts, the deadline), so the table stays exact and nothing has to be synced back; then
 * what the function would do with such a segment: the firewall forwards it, the load balancer
 * NATs it (address, port, MAC; its outcome and backend counters counted). Slots are filled only
 * when the function offers the entry of the frame it just forwarded, keyed by the frame's own
 * 5-tuple and arm, and checked on every hit (the entry not removed, still ESTABLISHED, not past
 * its deadline; the backend's MAC known); anything else goes to the function. A new flow simply
 * overwrites whatever shared its slot. */

#define FC_SLOTS (1u << 14)
#define SEQ_MASK 0xFFFFFFFFull

/* A frame's flow as the cache files it: its own 5-tuple and the arm it came in on. */
typedef struct {
    uint64_t src_hi, src_lo, dst_hi, dst_lo;
    uint32_t ports; /* sport << 16 | dport */
    uint8_t ver, side;
} fc_key;

typedef struct {
    fc_key key;
    uint8_t dir;
    PyObject *entry; /* NULL: an empty slot */
    /* The load balancer's NAT (nat_ip 0: none): rewrite the destination (nat_dst) or the source
     * to nat_ip:nat_port (0: the port stays), write a MAC at byte mac_at (from mac_src: the bytes
     * themselves, or an object whose `mac` is), count outcomes[outcome] and counts[pkey, bkey]. */
    uint32_t nat_ip;
    uint16_t nat_port;
    uint8_t nat_dst, mac_at;
    Py_ssize_t outcome;
    PyObject *mac_src, *outcomes, *counts, *pkey, *bkey;
} fc_slot;

typedef struct {
    PyObject_HEAD
    fc_slot *slots;
    long established; /* the Entry state value that qualifies */
    double timeout;   /* the ESTABLISHED timeout: a hit's new deadline is now + timeout */
    unsigned long long hits;
    int offered;      /* the function offered the frame being processed: `offer` holds it */
    fc_slot offer;
    fc_key pending;   /* the key of the last frame that missed, where an offer would go */
    uint32_t pending_at;
    int pending_ok;
} FlowCacheObject;

static PyObject *s_dead, *s_state, *s_expires, *s_end, *s_packets, *s_bytes, *s_mac;

static void fc_release(fc_slot *s) {
    Py_CLEAR(s->entry);
    Py_CLEAR(s->mac_src);
    Py_CLEAR(s->outcomes);
    Py_CLEAR(s->counts);
    Py_CLEAR(s->pkey);
    Py_CLEAR(s->bkey);
}

static int fc_same(const fc_key *a, const fc_key *b) {
    return a->src_lo == b->src_lo && a->dst_lo == b->dst_lo && a->ports == b->ports &&
           a->src_hi == b->src_hi && a->dst_hi == b->dst_hi && a->ver == b->ver &&
           a->side == b->side;
}

/* `old` + `delta` as a new int; takes the reference to `old` (NULL: an error already set). */
static PyObject *fc_plus(PyObject *old, uint64_t delta) {
    if (old == NULL) return NULL;
    unsigned long long v = PyLong_AsUnsignedLongLong(old);
    Py_DECREF(old);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    return PyLong_FromUnsignedLongLong(v + delta);
}

/* Add `delta` to the int attribute `name` of `e`. */
static int fc_add_attr(PyObject *e, PyObject *name, uint64_t delta) {
    PyObject *new_ = fc_plus(PyObject_GetAttr(e, name), delta);
    if (new_ == NULL) return -1;
    int rc = PyObject_SetAttr(e, name, new_);
    Py_DECREF(new_);
    return rc;
}

/* Add `delta` to the int at `key` of the list or dict `counter`. */
static int fc_add_item(PyObject *counter, PyObject *key, uint64_t delta) {
    PyObject *new_ = fc_plus(PyObject_GetItem(counter, key), delta);
    if (new_ == NULL) return -1;
    int rc = PyObject_SetItem(counter, key, new_);
    Py_DECREF(new_);
    return rc;
}

/* Whether the slot's entry may take this frame: 1 yes, 0 no (the slot is emptied when the entry
 * can never qualify again), -1 a Python error. */
static int fc_valid(FlowCacheObject *c, fc_slot *s, double now) {
    PyObject *e = s->entry;
    PyObject *v = PyObject_GetAttr(e, s_dead);
    if (v == NULL) return -1;
    int dead = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (dead < 0) return -1;
    v = PyObject_GetAttr(e, s_state);
    if (v == NULL) return -1;
    long state = PyLong_AsLong(v);
    Py_DECREF(v);
    if (state == -1 && PyErr_Occurred()) return -1;
    if (dead || state != c->established) {
        fc_release(s);
        return 0;
    }
    v = PyObject_GetAttr(e, s_expires);
    if (v == NULL) return -1;
    double expires = PyFloat_AsDouble(v);
    Py_DECREF(v);
    if (expires == -1.0 && PyErr_Occurred()) return -1;
    return expires > now;
}

/* The MAC a NAT slot writes, as a new reference to 6 bytes; NULL without an error when it is
 * not known (yet). */
static PyObject *fc_mac(const fc_slot *s) {
    if (PyBytes_CheckExact(s->mac_src)) return Py_NewRef(s->mac_src);
    PyObject *mac = PyObject_GetAttr(s->mac_src, s_mac);
    if (mac != NULL && (!PyBytes_CheckExact(mac) || PyBytes_GET_SIZE(mac) != 6)) Py_CLEAR(mac);
    return mac;
}

/* The connection's update: ConnTrack._tcp's fast path. */
static int fc_track(FlowCacheObject *c, PyObject *e, int dir, const parse_t *r, double now) {
    PyObject *end = PyObject_GetAttr(e, s_end);
    if (end == NULL) return -1;
    if (!PyList_CheckExact(end) || PyList_GET_SIZE(end) != 2) {
        PyErr_SetString(PyExc_TypeError, "FlowCache: an entry's end must be a list of two");
        Py_DECREF(end);
        return -1;
    }
    PyObject *seq_end =
        PyLong_FromUnsignedLongLong((r->v[F_TCP_SEQ] + r->v[F_PAYLOAD_LEN]) & SEQ_MASK);
    if (seq_end == NULL) {
        Py_DECREF(end);
        return -1;
    }
    PyList_SetItem(end, dir, seq_end); /* steals seq_end */
    Py_DECREF(end);
    if (fc_add_attr(e, s_packets, 1) < 0 || fc_add_attr(e, s_bytes, r->v[F_IP_LEN]) < 0)
        return -1;
    PyObject *expires = PyFloat_FromDouble(now + c->timeout);
    if (expires == NULL) return -1;
    int rc = PyObject_SetAttr(e, s_expires, expires);
    Py_DECREF(expires);
    return rc;
}

/* The load balancer's part of a hit on `frame`. */
static int fc_nat(fc_slot *s, uint8_t *frame, Py_ssize_t n, const parse_t *r, PyObject *mac) {
    int dst = s->nat_dst;
    if (nat_apply(frame, n, r->v[F_L3_OFF], r->v[F_L4_OFF], r->v[F_PROTO], r->v[F_FRAG], dst,
                  r->v[dst ? F_DST : F_SRC], r->v[dst ? F_DPORT : F_SPORT], s->nat_ip,
                  s->nat_port ? s->nat_port : r->v[dst ? F_DPORT : F_SPORT]) < 0) {
        PyErr_SetString(PyExc_ValueError, "FlowCache: NAT outside the frame");
        return -1;
    }
    memcpy(frame + s->mac_at, PyBytes_AS_STRING(mac), 6);
    PyObject *idx = PyLong_FromSsize_t(s->outcome);
    if (idx == NULL) return -1;
    int rc = fc_add_item(s->outcomes, idx, 1);
    Py_DECREF(idx);
    if (rc < 0 || fc_add_item(s->counts, s->pkey, 1) < 0 ||
        fc_add_item(s->counts, s->bkey, (uint64_t)r->v[F_LENGTH]) < 0)
        return -1;
    return 0;
}

/* The frame's fast path: 1 done (forward it; rewritten if the slot NATs), 0 not for the cache
 * (call the function), -1 a Python error. Remembers a qualifying frame's key for `fc_commit`. */
static int fc_lookup(FlowCacheObject *c, uint8_t *frame, Py_ssize_t n, int side, double now) {
    if (c->offered) {
        fc_release(&c->offer);
        c->offered = 0;
    }
    c->pending_ok = 0;
    parse_t r;
    memset(r.v, 0, sizeof r.v);
    memset(r.hi, 0, sizeof r.hi);
    r.b = frame;
    r.len = n;
    if (parse_frame(&r, n) != OK || !r.v[F_IP_VER] || r.v[F_PROTO] != PROTO_TCP ||
        r.v[F_FRAG] != FRAG_NONE || (r.v[F_TCP_FLAGS] & 0x17) != 0x10) /* FIN SYN RST ACK: ACK */
        return 0;
    fc_key *k = &c->pending;
    k->src_hi = r.hi[F_SRC];
    k->src_lo = r.v[F_SRC];
    k->dst_hi = r.hi[F_DST];
    k->dst_lo = r.v[F_DST];
    k->ports = (uint32_t)(r.v[F_SPORT] << 16 | r.v[F_DPORT]);
    k->ver = (uint8_t)r.v[F_IP_VER];
    k->side = (uint8_t)side;
    uint64_t h = (k->src_lo ^ k->src_hi * 31) * 0x9E3779B97F4A7C15ull;
    h ^= (k->dst_lo ^ k->dst_hi * 31 ^ k->ports ^ (uint64_t)side << 32) * 0xC2B2AE3D27D4EB4Full;
    c->pending_at = (uint32_t)(h >> 40) & (FC_SLOTS - 1);
    c->pending_ok = 1;
    fc_slot *s = &c->slots[c->pending_at];
    if (s->entry == NULL || !fc_same(&s->key, k)) return 0;
    int ok = fc_valid(c, s, now);
    if (ok <= 0) return ok;
    PyObject *mac = NULL;
    if (s->nat_ip) {
        mac = fc_mac(s);
        if (mac == NULL) return PyErr_Occurred() ? -1 : 0;
    }
    /* Own references: the writes below may run Python code that empties the slot. */
    fc_slot hit = *s;
    Py_INCREF(hit.entry);
    Py_XINCREF(hit.outcomes);
    Py_XINCREF(hit.counts);
    Py_XINCREF(hit.pkey);
    Py_XINCREF(hit.bkey);
    hit.mac_src = NULL;
    int rc = fc_track(c, hit.entry, hit.dir, &r, now);
    if (rc == 0 && hit.nat_ip) rc = fc_nat(&hit, frame, n, &r, mac);
    Py_XDECREF(mac);
    fc_release(&hit);
    if (rc < 0) return -1;
    c->hits++;
    return 1;
}

/* After the function forwarded the frame `fc_lookup` missed: file the entry it offered. */
static void fc_commit(FlowCacheObject *c, long verdict) {
    if (!c->offered) return;
    c->offered = 0;
    if (verdict == 0 && c->pending_ok) {
        fc_slot *s = &c->slots[c->pending_at];
        fc_release(s);
        *s = c->offer; /* the references the offer held */
        s->key = c->pending;
        memset(&c->offer, 0, sizeof c->offer);
        return;
    }
    fc_release(&c->offer);
}

static PyObject *fc_offer(FlowCacheObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "offer(entry, reply)");
        return NULL;
    }
    int reply = PyObject_IsTrue(args[1]);
    if (reply < 0) return NULL;
    fc_release(&self->offer);
    memset(&self->offer, 0, sizeof self->offer);
    self->offer.entry = Py_NewRef(args[0]);
    self->offer.dir = (uint8_t)reply;
    self->offered = 1;
    Py_RETURN_NONE;
}

static PyObject *fc_offer_nat(FlowCacheObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "offer_nat(entry, reply, dst, ip, port, mac_at, mac, "
                                         "outcomes, outcome, counts, packets_key, bytes_key)");
        return NULL;
    }
    int reply = PyObject_IsTrue(args[1]), dst = PyObject_IsTrue(args[2]);
    if (reply < 0 || dst < 0) return NULL;
    unsigned long ip = PyLong_AsUnsignedLong(args[3]);
    unsigned long port = PyLong_AsUnsignedLong(args[4]);
    long mac_at = PyLong_AsLong(args[5]);
    Py_ssize_t outcome = PyLong_AsSsize_t(args[8]);
    if (PyErr_Occurred()) return NULL;
    if (!ip || ip > 0xFFFFFFFFul || port > 0xFFFF || (mac_at != 0 && mac_at != 6)) {
        PyErr_SetString(PyExc_ValueError, "offer_nat: an IPv4 address, a port, a MAC at 0 or 6");
        return NULL;
    }
    fc_release(&self->offer);
    memset(&self->offer, 0, sizeof self->offer);
    fc_slot *o = &self->offer;
    o->entry = Py_NewRef(args[0]);
    o->dir = (uint8_t)reply;
    o->nat_dst = (uint8_t)dst;
    o->nat_ip = (uint32_t)ip;
    o->nat_port = (uint16_t)port;
    o->mac_at = (uint8_t)mac_at;
    o->mac_src = Py_NewRef(args[6]);
    o->outcomes = Py_NewRef(args[7]);
    o->outcome = outcome;
    o->counts = Py_NewRef(args[9]);
    o->pkey = Py_NewRef(args[10]);
    o->bkey = Py_NewRef(args[11]);
    self->offered = 1;
    Py_RETURN_NONE;
}

static PyObject *fc_forward(FlowCacheObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "forward(buf, length, side, now)");
        return NULL;
    }
    Py_ssize_t length = PyLong_AsSsize_t(args[1]);
    long side = PyLong_AsLong(args[2]);
    double now = PyFloat_AsDouble(args[3]);
    if (PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0) return NULL;
    int rc = fc_lookup(self, view.buf, length < view.len ? length : view.len, (int)side, now);
    PyBuffer_Release(&view);
    if (rc < 0) return NULL;
    return PyBool_FromLong(rc);
}

static PyObject *fc_settle(FlowCacheObject *self, PyObject *verdict) {
    long v = PyLong_AsLong(verdict);
    if (v == -1 && PyErr_Occurred()) return NULL;
    fc_commit(self, v);
    Py_RETURN_NONE;
}

static PyObject *fc_occupied(FlowCacheObject *self, PyObject *Py_UNUSED(ignored)) {
    Py_ssize_t n = 0;
    for (uint32_t i = 0; i < FC_SLOTS; i++) n += self->slots[i].entry != NULL;
    return PyLong_FromSsize_t(n);
}

static int fc_init(FlowCacheObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"established", "timeout", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ld:FlowCache", kwlist, &self->established,
                                     &self->timeout))
        return -1;
    if (self->slots == NULL) {
        self->slots = PyMem_Calloc(FC_SLOTS, sizeof(fc_slot));
        if (self->slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

static void fc_dealloc(FlowCacheObject *self) {
    if (self->slots != NULL) {
        for (uint32_t i = 0; i < FC_SLOTS; i++) fc_release(&self->slots[i]);
        PyMem_Free(self->slots);
    }
    fc_release(&self->offer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef fc_methods[] = {
    {"offer", (PyCFunction)(void (*)(void))fc_offer, METH_FASTCALL,
     "offer(entry, reply): the firewall forwards the frame being processed; its connection\n"
     "may be cached."},
    {"offer_nat", (PyCFunction)(void (*)(void))fc_offer_nat, METH_FASTCALL,
     "offer_nat(entry, reply, dst, ip, port, mac_at, mac, outcomes, outcome, counts,\n"
     "packets_key, bytes_key): the load balancer NATs the frame being processed (see the\n"
     "fc_slot fields in _fast.c)."},
    {"forward", (PyCFunction)(void (*)(void))fc_forward, METH_FASTCALL,
     "forward(buf, length, side, now) -> bool: what the C loop does before calling the\n"
     "function; True when the cache handled the frame itself (rewritten in place if NATed)."},
    {"settle", (PyCFunction)fc_settle, METH_O,
     "settle(verdict): what the C loop does after the function returned its verdict."},
    {"occupied", (PyCFunction)fc_occupied, METH_NOARGS, "occupied() -> filled slots."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef fc_members[] = {
    {"hits", T_ULONGLONG, offsetof(FlowCacheObject, hits), READONLY,
     "frames the cache handled"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject FlowCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nfv.datapath._fast.FlowCache",
    .tp_basicsize = sizeof(FlowCacheObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FlowCache(established, timeout): see _fast.c.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)fc_init,
    .tp_dealloc = (destructor)fc_dealloc,
    .tp_methods = fc_methods,
    .tp_members = fc_members,
};

PyObject *fast_cache_arg(PyObject *cache, int *ok) {
    *ok = 1;
    if (cache == Py_None) return NULL;
    if (PyObject_TypeCheck(cache, &FlowCacheType)) return cache;
    *ok = 0;
    PyErr_SetString(PyExc_TypeError, "cache must be a FlowCache or None");
    return NULL;
}

int fast_cache_lookup(PyObject *cache, uint8_t *frame, Py_ssize_t n, int side, double now) {
    return fc_lookup((FlowCacheObject *)cache, frame, n, side, now);
}

int fast_process(PyObject *process, PyObject **argv, uint32_t length, Py_ssize_t scratch_len,
                 PyObject *cache, long *verdict, long *out_length) {
    PyObject *n_obj = PyLong_FromUnsignedLong(length);
    if (n_obj == NULL) return -1;
    argv[1] = n_obj;
    PyObject *r = PyObject_Vectorcall(process, argv, 4, NULL);
    Py_DECREF(n_obj);
    if (r == NULL) return -1;
    long v = -1, n = -1;
    if (PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2) {
        v = PyLong_AsLong(PyTuple_GET_ITEM(r, 0));
        n = PyLong_AsLong(PyTuple_GET_ITEM(r, 1));
    }
    Py_DECREF(r);
    if (PyErr_Occurred()) return -1;
    if (v < 0 || v > 2 || n < 0 || n > scratch_len) {
        PyErr_SetString(PyExc_ValueError, "process must return (verdict, length in scratch)");
        return -1;
    }
    if (cache != NULL) fc_commit((FlowCacheObject *)cache, v);
    *verdict = v;
    *out_length = n;
    return 0;
}

/* ---- NAT ------------------------------------------------------------------------------------- */

static int field_u64(ParserObject *p, int i, uint64_t *out) {
    unsigned long long v = PyLong_AsUnsignedLongLong(p->f[i]);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

static int set_field(ParserObject *p, int i, uint64_t v) {
    PyObject *obj = PyLong_FromUnsignedLongLong(v);
    if (obj == NULL) return -1;
    Py_SETREF(p->f[i], obj);
    return 0;
}

PyDoc_STRVAR(nat_doc,
"nat(buf, parser, dst, ip, port)\n"
"nfv.datapath.rewrite.nat_ipv4_py for a frame `parser` (a C Parser) has just parsed: the\n"
"destination (dst true) or source address becomes `ip` and, when `port` is set and differs,\n"
"the matching port becomes `port`; checksums and the parser's fields follow.");

static PyObject *nat(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "nat(buf, parser, dst, ip, port)");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[1], &ParserType)) {
        PyErr_SetString(PyExc_TypeError, "nat: parser must be a nfv.datapath._fast.Parser");
        return NULL;
    }
    ParserObject *p = (ParserObject *)args[1];
    int dst = PyObject_IsTrue(args[2]);
    if (dst < 0) return NULL;
    uint64_t ip, port = 0, l3, l4off, proto, frag, old_ip, old_port;
    unsigned long long v = PyLong_AsUnsignedLongLong(args[3]);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    ip = v;
    if (args[4] != Py_None) {
        v = PyLong_AsUnsignedLongLong(args[4]);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
        port = v;
    }
    if (field_u64(p, F_L3_OFF, &l3) || field_u64(p, F_L4_OFF, &l4off) ||
        field_u64(p, F_PROTO, &proto) || field_u64(p, F_FRAG, &frag) ||
        field_u64(p, dst ? F_DST : F_SRC, &old_ip) ||
        field_u64(p, dst ? F_DPORT : F_SPORT, &old_port))
        return NULL;
    if (!port) port = old_port;
    if (ip > 0xFFFFFFFFu || old_ip > 0xFFFFFFFFu || port > 0xFFFF || old_port > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "nat: an IPv4 address and a port, please");
        return NULL;
    }
    Py_buffer b;
    if (PyObject_GetBuffer(args[0], &b, PyBUF_WRITABLE) < 0) return NULL;
    int rc = nat_apply(b.buf, b.len, l3, l4off, proto, frag, dst, old_ip, old_port, ip, port);
    PyBuffer_Release(&b);
    if (rc < 0) {
        PyErr_SetString(PyExc_ValueError, "nat: the parser's offsets lie outside the buffer");
        return NULL;
    }
    if (set_field(p, dst ? F_DST : F_SRC, ip) || set_field(p, dst ? F_DPORT : F_SPORT, port))
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"drain", drain, METH_VARARGS, drain_doc},
    {"nat", (PyCFunction)(void (*)(void))nat, METH_FASTCALL, nat_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fast",
    .m_doc = "The VNF hot path in C (see _fast.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fast(void) {
    for (int i = 0; i < N_FIELDS; i++) {
        parser_members[i] = (PyMemberDef){(char *)field_names[i], T_OBJECT_EX,
                                          offsetof(ParserObject, f) + i * sizeof(PyObject *), 0,
                                          NULL};
    }
    for (int d = 0; d < 2; d++) {
        for (int i = 0; i < LINEAR_BATCH; i++) {
            batches[d].iov[i].iov_base = batches[d].data[i];
            batches[d].msgs[i].msg_hdr.msg_iov = &batches[d].iov[i];
            batches[d].msgs[i].msg_hdr.msg_iovlen = 1;
        }
    }
    if (PyType_Ready(&ParserType) < 0 || PyType_Ready(&FlowCacheType) < 0) return NULL;
    if (!(s_dead = PyUnicode_InternFromString("dead")) ||
        !(s_state = PyUnicode_InternFromString("state")) ||
        !(s_expires = PyUnicode_InternFromString("expires")) ||
        !(s_end = PyUnicode_InternFromString("end")) ||
        !(s_packets = PyUnicode_InternFromString("packets")) ||
        !(s_bytes = PyUnicode_InternFromString("bytes")) ||
        !(s_mac = PyUnicode_InternFromString("mac")))
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Parser", (PyObject *)&ParserType) < 0 ||
        PyModule_AddObjectRef(m, "FlowCache", (PyObject *)&FlowCacheType) < 0
#ifdef HAVE_XSK
        || xsk_add_type(m) < 0
#endif
    ) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
