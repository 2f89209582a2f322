/* The VNF loop over AF_XDP sockets: XskPair, built into _fast where libxdp is there to link.
 *
 * One UMEM (XSK_FRAMES chunks of XSK_FRAME bytes) is shared by the sockets of both arms, so a
 * frame received on one arm can be sent out of the other from the chunk it arrived in: a frame
 * the flow cache forwards is never copied by us (the kernel copies it in and out: veths have no
 * zero-copy mode), and what the function returns is written back into that chunk. Each interface
 * gets a five-instruction XDP program that redirects every frame of its queue 0 to our socket (an
 * XSKMAP of one; without a socket the frame goes on to the stack), attached by a BPF link: it
 * comes off when the link's descriptor closes, also when the process is killed. libxdp provides
 * the socket and ring code, not the program: its own is attached by netlink and would stay.
 *
 * Chunks move: free list -> an arm's fill ring -> (the kernel) its RX ring -> us -> the TX ring
 * of either arm -> its completion ring -> free list; a dropped frame's chunk goes straight back.
 * Both fill rings together hold at most half the chunks, so a burst on its way out cannot starve
 * reception.
 *
 * The counters match drain's in _fast.c; the kernel's own drops (RX ring full, no fill chunk,
 * invalid TX descriptors) are read by `statistics`. */
#include "_fast.h"

#include <errno.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <stddef.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

#define XSK_FRAME 4096u  /* a page: the largest chunk an aligned UMEM takes */
#define XSK_FRAMES 8192u /* 32 MiB per VNF */
#define XSK_RING 2048u   /* descriptors per ring */
#define XSK_KICKS 64     /* sends per kick at most: 64 x 32 frames, a full TX ring */

typedef struct {
    struct xsk_socket *xsk;
    struct xsk_ring_cons rx, comp;
    struct xsk_ring_prod tx, fill;
    int fd;
    uint32_t unsent; /* TX descriptors submitted since the last kick */
    unsigned long long lost; /* frames the TX ring had no room for */
} xsk_arm;

typedef struct {
    PyObject_HEAD
    uint8_t *area;
    struct xsk_umem *umem;
    xsk_arm arm[2];
    uint64_t free[XSK_FRAMES];
    uint32_t nfree;
    int map_fd[2], prog_fd[2], link_fd[2]; /* -1: none */
    int generic; /* whether a program runs in generic (skb) mode: the driver had no XDP */
} XskPairObject;

static int quiet(enum libbpf_print_level level, const char *fmt, va_list args) {
    (void)level, (void)fmt, (void)args;
    return 0;
}

static inline uint64_t chunk_of(uint64_t addr) { return addr & ~(uint64_t)(XSK_FRAME - 1); }

/* Chunks the kernel has sent go back to the free list. */
static void reap(XskPairObject *p, xsk_arm *a) {
    uint32_t idx, n = xsk_ring_cons__peek(&a->comp, XSK_RING, &idx);
    for (uint32_t i = 0; i < n; i++)
        p->free[p->nfree++] = chunk_of(*xsk_ring_cons__comp_addr(&a->comp, idx + i));
    if (n) xsk_ring_cons__release(&a->comp, n);
}

/* Hand free chunks to the arm's fill ring. */
static void refill(XskPairObject *p, xsk_arm *a) {
    uint32_t idx, n = xsk_prod_nb_free(&a->fill, p->nfree);
    if (n > p->nfree) n = p->nfree;
    if (!n || xsk_ring_prod__reserve(&a->fill, n, &idx) != n) return;
    for (uint32_t i = 0; i < n; i++)
        *xsk_ring_prod__fill_addr(&a->fill, idx + i) = p->free[--p->nfree];
    xsk_ring_prod__submit(&a->fill, n);
}

/* Have the kernel send what was submitted. Copy mode sends only when asked, and at most 32
 * frames per call (TX_BATCH_SIZE in net/xdp/xsk.c, EAGAIN when there is more): ask until the
 * ring is empty or the device pushes back. */
static int kick(xsk_arm *a) {
    if (!a->unsent) return 0;
    a->unsent = 0;
    for (int tries = 0; tries < XSK_KICKS; tries++) {
        if (sendto(a->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0) {
            if (errno != EAGAIN && errno != EBUSY && errno != ENOBUFS && errno != ENETDOWN &&
                errno != ENXIO) {
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
            if (errno != EAGAIN) return 0;
        }
        if (__atomic_load_n(a->tx.consumer, __ATOMIC_ACQUIRE) == a->tx.cached_prod) return 0;
    }
    return 0;
}

/* Queue the chunk at `addr` (`len` bytes) on the arm's TX ring: 0 queued, 1 no room (the chunk
 * is freed and the frame counted lost), -1 a Python error (the chunk is freed too). */
static int transmit(XskPairObject *p, xsk_arm *a, uint64_t addr, uint32_t len) {
    uint32_t idx;
    if (xsk_ring_prod__reserve(&a->tx, 1, &idx) != 1) {
        int rc = kick(a);
        reap(p, a);
        if (rc < 0 || xsk_ring_prod__reserve(&a->tx, 1, &idx) != 1) {
            p->free[p->nfree++] = chunk_of(addr);
            if (rc < 0) return -1;
            a->lost++;
            return 1;
        }
    }
    struct xdp_desc *d = xsk_ring_prod__tx_desc(&a->tx, idx);
    d->addr = addr;
    d->len = len;
    xsk_ring_prod__submit(&a->tx, 1);
    a->unsent++;
    return 0;
}

static int side_arg(PyObject *obj, long *side) {
    *side = PyLong_AsLong(obj);
    if (*side == -1 && PyErr_Occurred()) return -1;
    if (*side != 0 && *side != 1) {
        PyErr_SetString(PyExc_ValueError, "side must be 0 (ingress) or 1 (egress)");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(xsk_drain_doc,
"drain(side, scratch, view, process, now, batch, cache)\n"
"_fast.drain for the frames in arm `side`'s RX ring, sent out of the other arm (forward) or\n"
"this one (bounce). Returns (rx, rx_bytes, fwd, fwd_bytes, back, back_bytes, dropped, errors).");

static PyObject *xsk_drain(XskPairObject *p, PyObject *args) {
    PyObject *side_obj, *scratch_obj, *view, *process, *now, *cache;
    unsigned int batch;
    if (!PyArg_ParseTuple(args, "OOOOOIO:drain", &side_obj, &scratch_obj, &view, &process, &now,
                          &batch, &cache))
        return NULL;
    long side;
    int cache_ok;
    if (side_arg(side_obj, &side) < 0) return NULL;
    cache = fast_cache_arg(cache, &cache_ok);
    if (!cache_ok) return NULL;
    double now_s = PyFloat_AsDouble(now);
    if (PyErr_Occurred()) return NULL;
    if (p->umem == NULL) {
        PyErr_SetString(PyExc_ValueError, "drain: the XskPair is closed");
        return NULL;
    }
    Py_buffer scratch;
    if (PyObject_GetBuffer(scratch_obj, &scratch, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    xsk_arm *src = &p->arm[side], *dst = &p->arm[!side];
    unsigned long long rx = 0, rx_bytes = 0, fwd = 0, fwd_bytes = 0, back = 0, back_bytes = 0;
    unsigned long long dropped = 0, errors = 0, lost_before = src->lost + dst->lost;
    PyObject *result = NULL, *argv[4] = {view, NULL, side_obj, now};
    reap(p, src);
    reap(p, dst);
    refill(p, src);
    uint32_t idx, got = xsk_ring_cons__peek(&src->rx, batch, &idx);
    uint32_t i = 0;
    for (; i < got; i++) {
        const struct xdp_desc *d = xsk_ring_cons__rx_desc(&src->rx, idx + i);
        uint64_t addr = d->addr;
        uint32_t len = d->len;
        uint8_t *frame = p->area + addr;
        rx++;
        rx_bytes += len;
        int hit = cache != NULL ? fast_cache_lookup(cache, frame, len, side, now_s) : 0;
        if (hit < 0) {
            p->free[p->nfree++] = chunk_of(addr);
            i++;
            goto done;
        }
        long verdict = 0, n = len;
        if (!hit) {
            if (len > scratch.len) { /* cannot happen: a chunk is smaller than scratch */
                p->free[p->nfree++] = chunk_of(addr);
                errors++;
                continue;
            }
            memcpy(scratch.buf, frame, len);
            if (fast_process(process, argv, len, scratch.len, cache, &verdict, &n) < 0) {
                p->free[p->nfree++] = chunk_of(addr);
                i++;
                goto done;
            }
            if (verdict == 1 || n > XSK_FRAME) {
                p->free[p->nfree++] = chunk_of(addr);
                if (verdict == 1) dropped++; else errors++;
                continue;
            }
            addr = chunk_of(addr);
            memcpy(p->area + addr, scratch.buf, (size_t)n);
        }
        int rc = transmit(p, verdict == 0 ? dst : src, addr, (uint32_t)n);
        if (rc < 0) {
            i++;
            goto done;
        }
        if (rc > 0) continue; /* counted in lost */
        if (verdict == 0) {
            fwd++;
            fwd_bytes += (unsigned long long)n;
        } else {
            back++;
            back_bytes += (unsigned long long)n;
        }
    }
    if (kick(dst) < 0 || kick(src) < 0) goto done;
    errors += src->lost + dst->lost - lost_before;
    result = Py_BuildValue("KKKKKKKK", rx, rx_bytes, fwd, fwd_bytes, back, back_bytes, dropped,
                           errors);
done: /* on an error the frames not yet taken stay in the ring for the next call */
    if (i < got) xsk_ring_cons__cancel(&src->rx, got - i);
    if (i) xsk_ring_cons__release(&src->rx, i);
    refill(p, src);
    PyBuffer_Release(&scratch);
    return result;
}

PyDoc_STRVAR(xsk_statistics_doc,
"statistics(side) -> dict\n"
"The kernel's counters of arm `side`: struct xdp_statistics, cumulative.");

static PyObject *xsk_statistics(XskPairObject *p, PyObject *side_obj) {
    long side;
    if (side_arg(side_obj, &side) < 0) return NULL;
    if (p->umem == NULL) {
        PyErr_SetString(PyExc_ValueError, "statistics: the XskPair is closed");
        return NULL;
    }
    struct xdp_statistics s;
    socklen_t len = sizeof(s);
    memset(&s, 0, sizeof(s));
    if (getsockopt(p->arm[side].fd, SOL_XDP, XDP_STATISTICS, &s, &len) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return Py_BuildValue("{sKsKsKsKsK}", "rx_dropped", (unsigned long long)s.rx_dropped,
                         "rx_invalid_descs", (unsigned long long)s.rx_invalid_descs,
                         "rx_ring_full", (unsigned long long)s.rx_ring_full,
                         "rx_fill_ring_empty_descs",
                         (unsigned long long)s.rx_fill_ring_empty_descs, "tx_invalid_descs",
                         (unsigned long long)s.tx_invalid_descs);
}

static PyObject *xsk_fileno(XskPairObject *p, PyObject *side_obj) {
    long side;
    if (side_arg(side_obj, &side) < 0) return NULL;
    return PyLong_FromLong(p->umem == NULL ? -1 : p->arm[side].fd);
}

static void xsk_release(XskPairObject *p) {
    for (int s = 0; s < 2; s++) {
        if (p->arm[s].xsk != NULL) xsk_socket__delete(p->arm[s].xsk);
        p->arm[s].xsk = NULL;
        int *fds[3] = {&p->link_fd[s], &p->prog_fd[s], &p->map_fd[s]};
        for (int i = 0; i < 3; i++) {
            if (*fds[i] >= 0) close(*fds[i]);
            *fds[i] = -1;
        }
    }
    if (p->umem != NULL) xsk_umem__delete(p->umem);
    p->umem = NULL;
    if (p->area != NULL) munmap(p->area, (size_t)XSK_FRAMES * XSK_FRAME);
    p->area = NULL;
}

static PyObject *xsk_close(XskPairObject *p, PyObject *Py_UNUSED(ignored)) {
    xsk_release(p);
    Py_RETURN_NONE;
}

static int xsk_fail(int rc, const char *what, const char *ifname) {
    errno = rc < 0 ? -rc : rc;
    PyErr_Format(PyExc_OSError, "AF_XDP %s on %s: %s", what, ifname, strerror(errno));
    return -1;
}

/* The redirect program for one interface, attached (native where the driver has XDP, else
 * generic) with its socket in the map: 0, or a negative errno and what failed. */
static int attach(XskPairObject *p, int s, const char *ifname, const char **what) {
    unsigned int ifindex = if_nametoindex(ifname);
    *what = "interface";
    if (!ifindex) return -errno;
    *what = "XSKMAP";
    p->map_fd[s] = bpf_map_create(BPF_MAP_TYPE_XSKMAP, "nfv_xsks", 4, 4, 1, NULL);
    if (p->map_fd[s] < 0) return p->map_fd[s];
    struct bpf_insn prog[] = {
        /* r2 = ctx->rx_queue_index; return bpf_redirect_map(map, r2, XDP_PASS) */
        {BPF_LDX | BPF_W | BPF_MEM, BPF_REG_2, BPF_REG_1,
         offsetof(struct xdp_md, rx_queue_index), 0},
        {BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, p->map_fd[s]},
        {0, 0, 0, 0, 0},
        {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_3, 0, 0, XDP_PASS},
        {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_redirect_map},
        {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
    };
    *what = "XDP program";
    p->prog_fd[s] = bpf_prog_load(BPF_PROG_TYPE_XDP, "nfv_xsk", "GPL", prog,
                                  sizeof(prog) / sizeof(prog[0]), NULL);
    if (p->prog_fd[s] < 0) return p->prog_fd[s];
    *what = "XDP link";
    LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = XDP_FLAGS_DRV_MODE);
    p->link_fd[s] = bpf_link_create(p->prog_fd[s], (int)ifindex, BPF_XDP, &opts);
    if (p->link_fd[s] < 0) {
        opts.flags = XDP_FLAGS_SKB_MODE;
        p->link_fd[s] = bpf_link_create(p->prog_fd[s], (int)ifindex, BPF_XDP, &opts);
        if (p->link_fd[s] < 0) return p->link_fd[s];
        p->generic = 1;
    }
    *what = "XSKMAP entry";
    return xsk_socket__update_xskmap(p->arm[s].xsk, p->map_fd[s]);
}

static int xsk_init(XskPairObject *p, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"ingress", "egress", NULL};
    const char *names[2];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ss:XskPair", kwlist, &names[0], &names[1]))
        return -1;
    xsk_release(p);
    memset(p->arm, 0, sizeof(p->arm));
    p->nfree = 0;
    p->generic = 0;
    void *area = mmap(NULL, (size_t)XSK_FRAMES * XSK_FRAME, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    p->area = area;
    struct xsk_umem_config ucfg = {.fill_size = XSK_RING, .comp_size = XSK_RING,
                                   .frame_size = XSK_FRAME, .frame_headroom = 0, .flags = 0};
    int rc = xsk_umem__create(&p->umem, area, (uint64_t)XSK_FRAMES * XSK_FRAME, &p->arm[0].fill,
                              &p->arm[0].comp, &ucfg);
    if (rc) {
        p->umem = NULL;
        xsk_release(p);
        return xsk_fail(rc, "UMEM", names[0]);
    }
    for (uint32_t i = 0; i < XSK_FRAMES; i++) p->free[p->nfree++] = (uint64_t)i * XSK_FRAME;
    struct xsk_socket_config scfg = {.rx_size = XSK_RING, .tx_size = XSK_RING,
                                     .libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD};
    for (int s = 0; s < 2; s++) {
        xsk_arm *a = &p->arm[s];
        rc = xsk_socket__create_shared(&a->xsk, names[s], 0, p->umem, &a->rx, &a->tx, &a->fill,
                                       &a->comp, &scfg);
        if (rc) {
            a->xsk = NULL;
            xsk_release(p);
            return xsk_fail(rc, "socket", names[s]);
        }
        a->fd = xsk_socket__fd(a->xsk);
        const char *what;
        rc = attach(p, s, names[s], &what);
        if (rc) {
            xsk_release(p);
            return xsk_fail(rc, what, names[s]);
        }
        refill(p, a);
    }
    return 0;
}

static PyObject *xsk_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    XskPairObject *p = (XskPairObject *)PyType_GenericNew(type, args, kwds);
    if (p != NULL)
        for (int s = 0; s < 2; s++) p->map_fd[s] = p->prog_fd[s] = p->link_fd[s] = -1;
    return (PyObject *)p;
}

static PyObject *xsk_generic(XskPairObject *p, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(p->generic);
}

static PyGetSetDef xsk_getset[] = {
    {"generic", (getter)xsk_generic, NULL,
     "Whether a program runs in generic (skb) mode, the driver having no XDP of its own.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static void xsk_dealloc(XskPairObject *p) {
    xsk_release(p);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyMethodDef xsk_methods[] = {
    {"drain", (PyCFunction)xsk_drain, METH_VARARGS, xsk_drain_doc},
    {"statistics", (PyCFunction)xsk_statistics, METH_O, xsk_statistics_doc},
    {"fileno", (PyCFunction)xsk_fileno, METH_O, "fileno(side): the arm's AF_XDP socket."},
    {"close", (PyCFunction)xsk_close, METH_NOARGS, "Detach and free everything (idempotent)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject XskPairType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nfv.datapath._fast.XskPair",
    .tp_basicsize = sizeof(XskPairObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "XskPair(ingress, egress): AF_XDP sockets on both arms; see _xsk.c.",
    .tp_new = xsk_new,
    .tp_init = (initproc)xsk_init,
    .tp_getset = xsk_getset,
    .tp_dealloc = (destructor)xsk_dealloc,
    .tp_methods = xsk_methods,
};

int xsk_add_type(PyObject *module) {
    libbpf_set_print(quiet); /* failures come back as error codes; we report them */
    if (PyType_Ready(&XskPairType) < 0) return -1;
    return PyModule_AddObjectRef(module, "XskPair", (PyObject *)&XskPairType);
}
