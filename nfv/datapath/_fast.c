/* The VNF hot path in C; each function has a Python twin that is the reference.
 *
 * drain: nfv.datapath.tpacket.Dataplane._drain_ring without the interpreter. Walks the frames the kernel has handed over in an arm's TPACKET_V2 RX ring, copies each into
 * the scratch buffer, calls the function's `process(view, length, side, now)` and queues what it
 * returns in the TX ring of the arm the verdict names; flushes both TX rings once at the end.
 * The Python loop in tpacket.py is the reference: same frames, same verdicts, same counters
 * (tests/unit/test_ring_loop.py runs both on the same frames). Frames that need care (a stripped
 * VLAN tag, truncated, outgoing) are left in the ring for the Python side: the walk stops there.
 *
 * nat4: nfv.datapath.rewrite's IPv4 address + port rewrite with RFC 1624 checksum updates, step
 * for step as the Python functions do it, so the bytes are identical (tests/unit/test_fast.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

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

typedef struct {
    uint8_t *base;
    Py_ssize_t size;
    int fd;
    Py_ssize_t tx_base;
    uint32_t tx_slots, slot_size, tx_cur, queued, wrong_format;
} tx_ring;

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

/* Have the kernel send every queued slot. 0, or -1 with a Python error set. */
static int flush(tx_ring *t) {
    if (!t->queued) return 0;
    t->queued = 0;
    if (send(t->fd, NULL, 0, MSG_DONTWAIT) < 0 && !soft_error(errno)) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* Queue `n` bytes of `frame`: 0 sent, 1 a soft error (the frame is lost), -1 a Python error. */
static int put(tx_ring *t, const uint8_t *frame, uint32_t n) {
    uint8_t *slot = t->base + t->tx_base + (Py_ssize_t)t->tx_cur * t->slot_size;
    uint32_t status = rd32_acquire(slot + H_STATUS);
    if (status == TP_STATUS_WRONG_FORMAT) {
        t->wrong_format++;
    } else if (status != TP_STATUS_AVAILABLE) {
        if (flush(t) < 0) return -1;
        status = rd32_acquire(slot + H_STATUS);
        if (status != TP_STATUS_AVAILABLE && status != TP_STATUS_WRONG_FORMAT) return 1;
    }
    if (n > t->slot_size - TX_DATA) return 1;
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
"drain(src, dst, cur, rx_slots, src_tx, dst_tx, scratch, view, process, side, now, batch)\n"
"src/dst: (writable buffer of the arm's mapping, fd); src_tx/dst_tx: (tx_base, tx_slots,\n"
"slot_size, tx_cur). Returns (cur, src_tx_cur, dst_tx_cur, rx, rx_bytes, fwd, fwd_bytes,\n"
"back, back_bytes, dropped, errors, src_wrong_format, dst_wrong_format, slow), `slow` true\n"
"when the walk stopped at a frame the Python side must handle.");

static PyObject *drain(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *src_mv, *dst_mv, *scratch_obj, *view, *process, *side, *now;
    int src_fd, dst_fd;
    unsigned int cur, rx_slots, batch;
    Py_ssize_t src_tx_base, dst_tx_base;
    unsigned int src_tx_slots, dst_tx_slots, slot_size, src_tx_cur, dst_tx_cur;
    if (!PyArg_ParseTuple(args, "(Oi)(Oi)II(nIII)(nIII)OOOOOI:drain", &src_mv, &src_fd, &dst_mv,
                          &dst_fd, &cur, &rx_slots, &src_tx_base, &src_tx_slots, &slot_size,
                          &src_tx_cur, &dst_tx_base, &dst_tx_slots, &slot_size, &dst_tx_cur,
                          &scratch_obj, &view, &process, &side, &now, &batch))
        return NULL;
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
    tx_ring out = {dbuf.buf, dbuf.len, dst_fd, dst_tx_base, dst_tx_slots, slot_size, dst_tx_cur, 0, 0};
    tx_ring back = {sbuf.buf, sbuf.len, src_fd, src_tx_base, src_tx_slots, slot_size, src_tx_cur, 0, 0};
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
        memcpy(scr, hdr + mac, snap);
        wr32_release(hdr + H_STATUS, TP_STATUS_KERNEL);
        cur = cur + 1 == rx_slots ? 0 : cur + 1;
        rx++;
        rx_bytes += snap;
        PyObject *length = PyLong_FromUnsignedLong(snap);
        if (length == NULL) goto done;
        argv[1] = length;
        PyObject *r = PyObject_Vectorcall(process, argv, 4, NULL);
        Py_DECREF(length);
        if (r == NULL) goto done;
        long verdict = -1, n = -1;
        if (PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2) {
            verdict = PyLong_AsLong(PyTuple_GET_ITEM(r, 0));
            n = PyLong_AsLong(PyTuple_GET_ITEM(r, 1));
        }
        Py_DECREF(r);
        if (PyErr_Occurred()) goto done;
        if (verdict < 0 || verdict > 2 || n < 0 || n > scratch.len) {
            PyErr_SetString(PyExc_ValueError, "process must return (verdict, length in scratch)");
            goto done;
        }
        if (verdict == 1) {
            dropped++;
            continue;
        }
        tx_ring *t = verdict == 0 ? &out : &back;
        int rc = put(t, scr, (uint32_t)n);
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

PyDoc_STRVAR(nat4_doc,
"nat4(buf, addr_at, old_ip, new_ip, port_at, old_port, new_port, ip_csum_at, l4_csum_at, udp)\n"
"Write new_ip at addr_at and fix the IPv4 header checksum at ip_csum_at and the L4 one at\n"
"l4_csum_at (-1: none); then, if port_at >= 0, new_port there and the L4 checksum again.");

static PyObject *nat4(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer b;
    Py_ssize_t addr_at, port_at, ip_csum_at, l4_csum_at;
    unsigned long old_ip, new_ip;
    unsigned int old_port, new_port;
    int udp;
    if (!PyArg_ParseTuple(args, "w*nkknIInnp:nat4", &b, &addr_at, &old_ip, &new_ip, &port_at,
                          &old_port, &new_port, &ip_csum_at, &l4_csum_at, &udp))
        return NULL;
    uint8_t *buf = b.buf;
    Py_ssize_t n = b.len;
    if (addr_at < 0 || addr_at + 4 > n || ip_csum_at < 0 || ip_csum_at + 2 > n ||
        l4_csum_at + 2 > n || port_at + 2 > n || old_ip > 0xFFFFFFFFul ||
        new_ip > 0xFFFFFFFFul || old_port > 0xFFFF || new_port > 0xFFFF) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "nat4: offset or value out of range");
        return NULL;
    }
    uint32_t ip = (uint32_t)new_ip;
    buf[addr_at] = (uint8_t)(ip >> 24);
    buf[addr_at + 1] = (uint8_t)(ip >> 16);
    buf[addr_at + 2] = (uint8_t)(ip >> 8);
    buf[addr_at + 3] = (uint8_t)ip;
    put16(buf + ip_csum_at, replace32(get16(buf + ip_csum_at), (uint32_t)old_ip, ip));
    if (l4_csum_at >= 0) fix_l4(buf + l4_csum_at, udp, 1, (uint32_t)old_ip, ip);
    if (port_at >= 0) {
        put16(buf + port_at, (uint16_t)new_port);
        if (l4_csum_at >= 0) fix_l4(buf + l4_csum_at, udp, 0, old_port, new_port);
    }
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"drain", drain, METH_VARARGS, drain_doc},
    {"nat4", nat4, METH_VARARGS, nat4_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fast", "The VNF hot path in C (see _fast.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__fast(void) { return PyModule_Create(&module); }
