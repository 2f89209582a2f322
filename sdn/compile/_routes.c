/* Route repair in C: sdn.compile.routing.DestinationRoutes over arrays.
 *
 * The Python class in routing.py is the reference; this is the same algorithm step for step
 * (tests/unit/test_routing.py runs both through the same churn and compares them with a
 * fresh computation), on a graph indexed once per topology (RouteGraph: switches sorted by
 * dpid, so index order is dpid order, and adjacency in CSR form) instead of dicts. A
 * destination keeps only its distance array; primaries are derived from distances where
 * they are needed, and the previous hops are read from the `hops` dict it maintains for the
 * compiler (dpid -> routing.Hops), which is also what says what changed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EPSILON 1e-9
#define COST_SCALE 1e9 /* backup costs compare rounded to 1e-9, as routing.COST_SCALE */

static PyObject *hops_type; /* routing.Hops, given by routing.py through init() */

/* ---- RouteGraph ---- */

typedef struct {
    PyObject_HEAD
    Py_ssize_t n, max_degree;
    PyObject *dpids; /* tuple: index -> dpid (ascending) */
    PyObject *index; /* dict: dpid -> index */
    Py_ssize_t *start; /* n + 1 offsets into nbr/weight */
    Py_ssize_t *nbr;   /* neighbours of each switch, ascending */
    double *weight;
} RouteGraph;

static void graph_dealloc(RouteGraph *self) {
    Py_XDECREF(self->dpids);
    Py_XDECREF(self->index);
    PyMem_Free(self->start);
    PyMem_Free(self->nbr);
    PyMem_Free(self->weight);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

typedef struct {
    Py_ssize_t nbr;
    double weight;
} slot;

static int cmp_slot(const void *a, const void *b) {
    Py_ssize_t x = ((const slot *)a)->nbr, y = ((const slot *)b)->nbr;
    return (x > y) - (x < y);
}

static Py_ssize_t index_of(RouteGraph *g, PyObject *dpid) {
    PyObject *idx = PyDict_GetItemWithError(g->index, dpid);
    if (idx == NULL) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_KeyError, "switch %R is not in the graph", dpid);
        return -1;
    }
    return PyLong_AsSsize_t(idx);
}

/* RouteGraph(adj): adj is {dpid: {neighbour dpid: weight}}, symmetric. */
static int graph_init(RouteGraph *self, PyObject *args, PyObject *kwds) {
    PyObject *adj;
    static char *kwlist[] = {"adj", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!", kwlist, &PyDict_Type, &adj))
        return -1;
    PyObject *keys = PyDict_Keys(adj);
    if (keys == NULL || PyList_Sort(keys) < 0) {
        Py_XDECREF(keys);
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(keys);
    self->n = n;
    Py_XSETREF(self->dpids, PyList_AsTuple(keys));
    Py_DECREF(keys);
    Py_XSETREF(self->index, PyDict_New());
    if (self->dpids == NULL || self->index == NULL)
        return -1;
    Py_ssize_t edges = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *nbrs = PyDict_GetItem(adj, PyTuple_GET_ITEM(self->dpids, i));
        if (!PyDict_Check(nbrs)) {
            PyErr_SetString(PyExc_TypeError, "adjacency values must be dicts");
            return -1;
        }
        edges += PyDict_GET_SIZE(nbrs);
        PyObject *idx = PyLong_FromSsize_t(i);
        if (idx == NULL || PyDict_SetItem(self->index, PyTuple_GET_ITEM(self->dpids, i), idx) < 0) {
            Py_XDECREF(idx);
            return -1;
        }
        Py_DECREF(idx);
    }
    PyMem_Free(self->start);
    PyMem_Free(self->nbr);
    PyMem_Free(self->weight);
    self->start = PyMem_Calloc(n + 1, sizeof(Py_ssize_t));
    self->nbr = PyMem_Calloc(edges ? edges : 1, sizeof(Py_ssize_t));
    self->weight = PyMem_Calloc(edges ? edges : 1, sizeof(double));
    slot *tmp = PyMem_Calloc(edges ? edges : 1, sizeof(slot));
    if (self->start == NULL || self->nbr == NULL || self->weight == NULL || tmp == NULL) {
        PyMem_Free(tmp);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        self->start[i] = at;
        PyObject *nbrs = PyDict_GetItem(adj, PyTuple_GET_ITEM(self->dpids, i));
        Py_ssize_t pos = 0, first = at;
        PyObject *key, *value;
        while (PyDict_Next(nbrs, &pos, &key, &value)) {
            Py_ssize_t j = index_of(self, key);
            double w = PyFloat_AsDouble(value);
            if (j < 0 || (w == -1.0 && PyErr_Occurred())) {
                PyMem_Free(tmp);
                return -1;
            }
            tmp[at].nbr = j;
            tmp[at].weight = w;
            at++;
        }
        qsort(tmp + first, at - first, sizeof(slot), cmp_slot);
    }
    self->start[n] = at;
    self->max_degree = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (self->start[i + 1] - self->start[i] > self->max_degree)
            self->max_degree = self->start[i + 1] - self->start[i];
    for (Py_ssize_t s = 0; s < at; s++) {
        self->nbr[s] = tmp[s].nbr;
        self->weight[s] = tmp[s].weight;
    }
    PyMem_Free(tmp);
    return 0;
}

static double edge_weight(RouteGraph *g, Py_ssize_t a, Py_ssize_t b) {
    for (Py_ssize_t s = g->start[a]; s < g->start[a + 1]; s++)
        if (g->nbr[s] == b)
            return g->weight[s];
    return NAN;
}

static PyTypeObject RouteGraphType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sdn.compile._routes.RouteGraph",
    .tp_doc = "The switch graph, indexed by dpid order, for DestinationRoutes.",
    .tp_basicsize = sizeof(RouteGraph),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)graph_init,
    .tp_dealloc = (destructor)graph_dealloc,
};

/* ---- a min-heap of (distance, index), ties by index as heapq's tuples ---- */

typedef struct {
    double d;
    Py_ssize_t node;
} entry;

typedef struct {
    entry *items;
    Py_ssize_t len, cap;
} heap;

static int before_entry(entry a, entry b) {
    return a.d < b.d || (a.d == b.d && a.node < b.node);
}

static int heap_push(heap *h, double d, Py_ssize_t node) {
    if (h->len == h->cap) {
        Py_ssize_t cap = h->cap ? 2 * h->cap : 64;
        entry *items = PyMem_Realloc(h->items, cap * sizeof(entry));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        h->items = items;
        h->cap = cap;
    }
    Py_ssize_t i = h->len++;
    entry e = {d, node};
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (!before_entry(e, h->items[parent]))
            break;
        h->items[i] = h->items[parent];
        i = parent;
    }
    h->items[i] = e;
    return 0;
}

static entry heap_pop(heap *h) {
    entry top = h->items[0], last = h->items[--h->len];
    Py_ssize_t i = 0;
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= h->len)
            break;
        if (child + 1 < h->len && before_entry(h->items[child + 1], h->items[child]))
            child++;
        if (!before_entry(h->items[child], last))
            break;
        h->items[i] = h->items[child];
        i = child;
    }
    if (h->len)
        h->items[i] = last;
    return top;
}

/* ---- DestinationRoutes ---- */

typedef struct {
    PyObject_HEAD
    RouteGraph *graph; /* what dist is indexed by */
    PyObject *dst;     /* dpid */
    Py_ssize_t dst_index;
    int ecmp;
    double *dist; /* graph->n entries, INFINITY: cannot reach dst */
    PyObject *hops;   /* dict dpid -> Hops */
    PyObject *before; /* dict dpid -> Hops | None, since take_changed */
} Routes;

static void routes_dealloc(Routes *self) {
    Py_XDECREF(self->graph);
    Py_XDECREF(self->dst);
    Py_XDECREF(self->hops);
    Py_XDECREF(self->before);
    PyMem_Free(self->dist);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define REACHES(self, i) (!isinf((self)->dist[i]))

/* The equal-cost next hops of `node` (ascending; one without ECMP); returns how many. */
static Py_ssize_t primary_of(Routes *self, Py_ssize_t node, Py_ssize_t *out) {
    RouteGraph *g = self->graph;
    double d = self->dist[node];
    Py_ssize_t k = 0;
    if (node == self->dst_index || !REACHES(self, node))
        return 0;
    for (Py_ssize_t s = g->start[node]; s < g->start[node + 1]; s++) {
        Py_ssize_t m = g->nbr[s];
        if (REACHES(self, m) && fabs(g->weight[s] + self->dist[m] - d) < EPSILON) {
            out[k++] = m;
            if (!self->ecmp)
                break;
        }
    }
    return k;
}

static int contains(const Py_ssize_t *items, Py_ssize_t len, Py_ssize_t x) {
    for (Py_ssize_t i = 0; i < len; i++)
        if (items[i] == x)
            return 1;
    return 0;
}

/* routing._backup: a loop-free alternate first, then a neighbour that routes via us with
 * other equal-cost next hops, then any; by cost, then dpid. */
static Py_ssize_t backup_of(Routes *self, Py_ssize_t node, const Py_ssize_t *mine,
                            Py_ssize_t mine_len, Py_ssize_t *scratch, int *loop_free) {
    RouteGraph *g = self->graph;
    Py_ssize_t best = -1;
    int best_rank = 3;
    double best_cost = 0;
    for (Py_ssize_t s = g->start[node]; s < g->start[node + 1]; s++) {
        Py_ssize_t m = g->nbr[s];
        if (contains(mine, mine_len, m) || !REACHES(self, m))
            continue;
        Py_ssize_t theirs = primary_of(self, m, scratch);
        int rank = !contains(scratch, theirs, node) ? 0 : theirs > 1 ? 1 : 2;
        if (rank > best_rank)
            continue;
        double cost = nearbyint((g->weight[s] + self->dist[m]) * COST_SCALE);
        if (best < 0 || rank < best_rank || cost < best_cost || (cost == best_cost && m < best)) {
            best = m;
            best_rank = rank;
            best_cost = cost;
        }
    }
    *loop_free = best >= 0 && best_rank == 0;
    return best;
}

/* The Hops of a switch that reaches the destination (a new reference). */
static PyObject *hops_of(Routes *self, Py_ssize_t node) {
    RouteGraph *g = self->graph;
    Py_ssize_t *mine = PyMem_Malloc(2 * (g->max_degree + 1) * sizeof(Py_ssize_t));
    if (mine == NULL)
        return PyErr_NoMemory();
    Py_ssize_t k = primary_of(self, node, mine);
    int loop_free;
    Py_ssize_t backup = backup_of(self, node, mine, k, mine + g->max_degree + 1, &loop_free);
    PyObject *primary = PyTuple_New(k), *hops = NULL;
    if (primary != NULL) {
        for (Py_ssize_t i = 0; i < k; i++) {
            PyObject *dpid = PyTuple_GET_ITEM(g->dpids, mine[i]);
            Py_INCREF(dpid);
            PyTuple_SET_ITEM(primary, i, dpid);
        }
        PyObject *backup_dpid = backup >= 0 ? PyTuple_GET_ITEM(g->dpids, backup) : Py_None;
        hops = PyObject_CallFunctionObjArgs(hops_type, primary, backup_dpid,
                                            loop_free ? Py_True : Py_False, NULL);
        Py_DECREF(primary);
    }
    PyMem_Free(mine);
    return hops;
}

/* Set the hops of `node` to what its distances say now, noting the previous value. */
static int refresh_hops(Routes *self, Py_ssize_t node) {
    PyObject *dpid = PyTuple_GET_ITEM(self->graph->dpids, node);
    PyObject *old = PyDict_GetItemWithError(self->hops, dpid);
    if (old == NULL && PyErr_Occurred())
        return -1;
    PyObject *now = NULL;
    if (node != self->dst_index && REACHES(self, node)) {
        now = hops_of(self, node);
        if (now == NULL)
            return -1;
        if (old != NULL) {
            int same = PyObject_RichCompareBool(old, now, Py_EQ);
            if (same != 0) {
                Py_DECREF(now);
                return same < 0 ? -1 : 0;
            }
        }
    } else if (old == NULL) {
        return 0;
    }
    if (PyDict_Contains(self->before, dpid) == 0 &&
        PyDict_SetItem(self->before, dpid, old ? old : Py_None) < 0) {
        Py_XDECREF(now);
        return -1;
    }
    int rc = now ? PyDict_SetItem(self->hops, dpid, now) : PyDict_DelItem(self->hops, dpid);
    Py_XDECREF(now);
    return rc;
}

/* Settle what `h` holds, nearest first, spreading to `only` switches (all when NULL). */
static int dijkstra(Routes *self, heap *h, const char *only) {
    RouteGraph *g = self->graph;
    while (h->len) {
        entry e = heap_pop(h);
        if (REACHES(self, e.node))
            continue;
        self->dist[e.node] = e.d;
        for (Py_ssize_t s = g->start[e.node]; s < g->start[e.node + 1]; s++) {
            Py_ssize_t m = g->nbr[s];
            if (!REACHES(self, m) && (only == NULL || only[m]) &&
                heap_push(h, e.d + g->weight[s], m) < 0)
                return -1;
        }
    }
    return 0;
}

/* Read distances by `graph`'s indices from now on (remapped by dpid when its switches
 * differ from the graph before). */
static int bind_graph(Routes *self, PyObject *graph) {
    if (!PyObject_TypeCheck(graph, &RouteGraphType)) {
        PyErr_SetString(PyExc_TypeError, "a RouteGraph is needed");
        return -1;
    }
    RouteGraph *g = (RouteGraph *)graph, *old = self->graph;
    if (old == g)
        return 0;
    int same = old == NULL ? 0 : PyObject_RichCompareBool(old->dpids, g->dpids, Py_EQ);
    if (same < 0)
        return -1;
    if (!same) {
        double *dist = PyMem_Malloc((g->n ? g->n : 1) * sizeof(double));
        if (dist == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < g->n; i++) {
            dist[i] = INFINITY;
            if (old != NULL) {
                PyObject *at = PyDict_GetItemWithError(old->index, PyTuple_GET_ITEM(g->dpids, i));
                if (at != NULL)
                    dist[i] = self->dist[PyLong_AsSsize_t(at)];
                else if (PyErr_Occurred()) {
                    PyMem_Free(dist);
                    return -1;
                }
            }
        }
        PyMem_Free(self->dist);
        self->dist = dist;
    }
    Py_ssize_t dst = index_of(g, self->dst);
    if (dst < 0)
        return -1;
    self->dst_index = dst;
    Py_INCREF(g);
    Py_XSETREF(self->graph, g);
    return 0;
}

/* Recompute hops where they can have changed (routing.DestinationRoutes._repair):
 * `moved` switches with their distance before (NAN: none), `touched` ends of edges. */
static int repair(Routes *self, const Py_ssize_t *touched, Py_ssize_t touched_len,
                  const Py_ssize_t *moved, const double *moved_before, Py_ssize_t moved_len) {
    RouteGraph *g = self->graph;
    Py_ssize_t n = g->n;
    double *shift = PyMem_Malloc((n ? n : 1) * sizeof(double));
    char *candidate = PyMem_Calloc(n ? n : 1, 1), *backup = PyMem_Calloc(n ? n : 1, 1);
    Py_ssize_t *primary = PyMem_Malloc((n + 1) * sizeof(Py_ssize_t));
    Py_ssize_t *was = PyMem_Malloc((n + 1) * sizeof(Py_ssize_t));
    int rc = -1;
    if (shift == NULL || candidate == NULL || backup == NULL || primary == NULL || was == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        shift[i] = 0.0;
    for (Py_ssize_t i = 0; i < moved_len; i++) {
        Py_ssize_t node = moved[i];
        shift[node] = isnan(moved_before[i]) || !REACHES(self, node)
                          ? NAN : self->dist[node] - moved_before[i];
    }
    for (Py_ssize_t i = 0; i < touched_len; i++)
        candidate[touched[i]] = 1;
    for (Py_ssize_t i = 0; i < moved_len; i++) {
        Py_ssize_t node = moved[i];
        for (Py_ssize_t s = g->start[node]; s < g->start[node + 1]; s++) {
            Py_ssize_t m = g->nbr[s];
            if (isnan(shift[node]) || isnan(shift[m]) || fabs(shift[node] - shift[m]) >= EPSILON)
                candidate[node] = candidate[m] = 1;
        }
    }
    for (Py_ssize_t node = 0; node < n; node++) {
        if (!candidate[node])
            continue;
        backup[node] = 1;
        /* the primaries before: from the hops held (`primary` and `hops` agree) */
        PyObject *old = PyDict_GetItemWithError(self->hops, PyTuple_GET_ITEM(g->dpids, node));
        if (old == NULL && PyErr_Occurred())
            goto done;
        Py_ssize_t was_len = old ? PyTuple_GET_SIZE(PyTuple_GET_ITEM(old, 0)) : 0;
        for (Py_ssize_t i = 0; i < was_len; i++)
            if ((was[i] = index_of(g, PyTuple_GET_ITEM(PyTuple_GET_ITEM(old, 0), i))) < 0)
                goto done;
        Py_ssize_t len = primary_of(self, node, primary);
        int reaches = node != self->dst_index && REACHES(self, node);
        if ((old != NULL) == reaches && was_len == len &&
            memcmp(was, primary, len * sizeof(Py_ssize_t)) == 0)
            continue;
        /* switches whose rank in `_backup` may differ: those that left or joined our
         * primaries, or all of them when we went from one to several or back */
        int all = (was_len > 1) != (len > 1);
        for (Py_ssize_t i = 0; i < was_len; i++)
            if (all || !contains(primary, len, was[i]))
                backup[was[i]] = 1;
        for (Py_ssize_t i = 0; i < len; i++)
            if (all || !contains(was, was_len, primary[i]))
                backup[primary[i]] = 1;
    }
    for (Py_ssize_t node = 0; node < n; node++)
        if (backup[node] && refresh_hops(self, node) < 0)
            goto done;
    rc = 0;
done:
    PyMem_Free(shift);
    PyMem_Free(candidate);
    PyMem_Free(backup);
    PyMem_Free(primary);
    PyMem_Free(was);
    return rc;
}

static int routes_init(Routes *self, PyObject *args, PyObject *kwds) {
    PyObject *graph, *dst;
    int ecmp = 1;
    static char *kwlist[] = {"graph", "dst", "ecmp", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$p", kwlist, &graph, &dst, &ecmp))
        return -1;
    if (hops_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "init(Hops) first");
        return -1;
    }
    Py_INCREF(dst);
    Py_XSETREF(self->dst, dst);
    self->ecmp = ecmp;
    Py_XSETREF(self->hops, PyDict_New());
    Py_XSETREF(self->before, PyDict_New());
    if (self->hops == NULL || self->before == NULL)
        return -1;
    if (bind_graph(self, graph) < 0)
        return -1;
    RouteGraph *g = self->graph;
    for (Py_ssize_t i = 0; i < g->n; i++)
        self->dist[i] = INFINITY;
    heap h = {0};
    int rc = heap_push(&h, 0.0, self->dst_index) < 0 || dijkstra(self, &h, NULL) < 0 ? -1 : 0;
    PyMem_Free(h.items);
    if (rc < 0)
        return -1;
    for (Py_ssize_t i = 0; i < g->n; i++) {
        if (i == self->dst_index || !REACHES(self, i))
            continue;
        PyObject *hop = hops_of(self, i);
        if (hop == NULL || PyDict_SetItem(self->hops, PyTuple_GET_ITEM(g->dpids, i), hop) < 0) {
            Py_XDECREF(hop);
            return -1;
        }
        Py_DECREF(hop);
    }
    return 0;
}

/* What one lose_edges or gain_edges call works on: the edges' ends (two indices each) and
 * weights, the switches whose distance moved with their distance before, and a heap. */
typedef struct {
    Py_ssize_t count;
    Py_ssize_t *ends;
    double *weight; /* the old weight of a lost edge, the graph's of a gained one */
    Py_ssize_t nmoved;
    Py_ssize_t *moved;
    double *before; /* NAN: it had no distance */
    char *is_moved;
    heap h;
} change;

static void change_free(change *c) {
    PyMem_Free(c->ends);
    PyMem_Free(c->weight);
    PyMem_Free(c->moved);
    PyMem_Free(c->before);
    PyMem_Free(c->is_moved);
    PyMem_Free(c->h.items);
}

/* Bind the graph of (graph, edges) and read the edges: (u, v, old weight) when `lost`,
 * else (u, v). */
static int change_start(Routes *self, PyObject *args, int lost, change *c) {
    PyObject *graph, *edges;
    memset(c, 0, sizeof *c);
    if (!PyArg_ParseTuple(args, "OO", &graph, &edges))
        return -1;
    if (bind_graph(self, graph) < 0)
        return -1;
    RouteGraph *g = self->graph;
    PyObject *seq = PySequence_Fast(edges, "edges must be a sequence");
    if (seq == NULL)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq), n = g->n;
    c->ends = PyMem_Malloc((2 * count + 1) * sizeof(Py_ssize_t));
    c->weight = PyMem_Malloc((count + 1) * sizeof(double));
    c->moved = PyMem_Malloc((n + 1) * sizeof(Py_ssize_t));
    c->before = PyMem_Malloc((n + 1) * sizeof(double));
    c->is_moved = PyMem_Calloc(n + 1, 1);
    if (c->ends == NULL || c->weight == NULL || c->moved == NULL || c->before == NULL ||
        c->is_moved == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *edge = PySequence_Fast_GET_ITEM(seq, i), *pu, *pv;
        double weight = 0;
        if (!(lost ? PyArg_ParseTuple(edge, "OOd", &pu, &pv, &weight)
                   : PyArg_ParseTuple(edge, "OO", &pu, &pv)))
            goto fail;
        Py_ssize_t u = index_of(g, pu), v = u < 0 ? -1 : index_of(g, pv);
        if (v < 0)
            goto fail;
        c->ends[2 * i] = u;
        c->ends[2 * i + 1] = v;
        c->weight[i] = lost ? weight : edge_weight(g, u, v);
        c->count = i + 1;
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    change_free(c);
    return -1;
}

static void note_moved(change *c, Py_ssize_t node, double before) {
    c->is_moved[node] = 1;
    c->moved[c->nmoved] = node;
    c->before[c->nmoved++] = before;
}

/* lose_edges(graph, [(u, v, old weight)]): graph no longer has these edges. */
static PyObject *routes_lose_edges(Routes *self, PyObject *args) {
    change c;
    heap seeds = {0};
    int rc = -1;
    if (change_start(self, args, 1, &c) < 0)
        return NULL;
    RouteGraph *g = self->graph;
    for (Py_ssize_t i = 0; i < c.count; i++) {
        Py_ssize_t u = c.ends[2 * i], v = c.ends[2 * i + 1];
        Py_ssize_t ends[2][2] = {{u, v}, {v, u}};
        for (int k = 0; k < 2; k++) {
            Py_ssize_t a = ends[k][0], b = ends[k][1];
            if (REACHES(self, a) && REACHES(self, b) &&
                fabs(c.weight[i] + self->dist[b] - self->dist[a]) < EPSILON &&
                heap_push(&seeds, self->dist[a], a) < 0)
                goto done;
        }
    }
    /* _affected: switches every shortest path of which used a lost edge, nearest first */
    while (seeds.len) {
        entry e = heap_pop(&seeds);
        Py_ssize_t node = e.node;
        if (c.is_moved[node] || node == self->dst_index)
            continue;
        int kept = 0;
        for (Py_ssize_t s = g->start[node]; s < g->start[node + 1] && !kept; s++) {
            Py_ssize_t m = g->nbr[s];
            kept = REACHES(self, m) && !c.is_moved[m] &&
                   fabs(g->weight[s] + self->dist[m] - e.d) < EPSILON;
        }
        if (kept)
            continue;
        note_moved(&c, node, self->dist[node]);
        for (Py_ssize_t s = g->start[node]; s < g->start[node + 1]; s++) {
            Py_ssize_t m = g->nbr[s];
            if (REACHES(self, m) && !c.is_moved[m] &&
                fabs(g->weight[s] + e.d - self->dist[m]) < EPSILON &&
                heap_push(&seeds, self->dist[m], m) < 0)
                goto done;
        }
    }
    /* _resettle: Dijkstra over the affected switches from their unaffected neighbours */
    for (Py_ssize_t i = 0; i < c.nmoved; i++)
        self->dist[c.moved[i]] = INFINITY;
    for (Py_ssize_t i = 0; i < c.nmoved; i++) {
        Py_ssize_t node = c.moved[i];
        double best = INFINITY;
        for (Py_ssize_t s = g->start[node]; s < g->start[node + 1]; s++) {
            Py_ssize_t m = g->nbr[s];
            if (REACHES(self, m) && g->weight[s] + self->dist[m] < best)
                best = g->weight[s] + self->dist[m];
        }
        if (!isinf(best) && heap_push(&c.h, best, node) < 0)
            goto done;
    }
    if (dijkstra(self, &c.h, c.is_moved) < 0)
        goto done;
    rc = repair(self, c.ends, 2 * c.count, c.moved, c.before, c.nmoved);
done:
    PyMem_Free(seeds.items);
    change_free(&c);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* gain_edges(graph, [(u, v)]): graph has these edges now, with their weights. */
static PyObject *routes_gain_edges(Routes *self, PyObject *args) {
    change c;
    int rc = -1;
    if (change_start(self, args, 0, &c) < 0)
        return NULL;
    RouteGraph *g = self->graph;
    for (Py_ssize_t i = 0; i < c.count; i++) {
        Py_ssize_t u = c.ends[2 * i], v = c.ends[2 * i + 1];
        Py_ssize_t ends[2][2] = {{u, v}, {v, u}};
        for (int k = 0; k < 2; k++) {
            Py_ssize_t a = ends[k][0], b = ends[k][1];
            double d = self->dist[b] + c.weight[i];
            if (REACHES(self, b) && (!REACHES(self, a) || d < self->dist[a] - EPSILON) &&
                heap_push(&c.h, d, a) < 0)
                goto done;
        }
    }
    while (c.h.len) {
        entry e = heap_pop(&c.h);
        if (REACHES(self, e.node) && e.d >= self->dist[e.node] - EPSILON)
            continue;
        if (!c.is_moved[e.node])
            note_moved(&c, e.node, REACHES(self, e.node) ? self->dist[e.node] : NAN);
        self->dist[e.node] = e.d;
        for (Py_ssize_t s = g->start[e.node]; s < g->start[e.node + 1]; s++) {
            Py_ssize_t m = g->nbr[s];
            double nd = e.d + g->weight[s];
            if ((!REACHES(self, m) || nd < self->dist[m] - EPSILON) &&
                heap_push(&c.h, nd, m) < 0)
                goto done;
        }
    }
    rc = repair(self, c.ends, 2 * c.count, c.moved, c.before, c.nmoved);
done:
    change_free(&c);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *routes_take_changed(Routes *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *changed = PyDict_New(), *key, *old;
    Py_ssize_t pos = 0;
    if (changed == NULL)
        return NULL;
    while (PyDict_Next(self->before, &pos, &key, &old)) {
        PyObject *now = PyDict_GetItemWithError(self->hops, key);
        if (now == NULL && PyErr_Occurred())
            goto fail;
        int same = now == NULL || old == Py_None ? now == NULL && old == Py_None
                                                 : PyObject_RichCompareBool(now, old, Py_EQ);
        if (same < 0)
            goto fail;
        if (!same && PyDict_SetItem(changed, key, old) < 0)
            goto fail;
    }
    PyDict_Clear(self->before);
    return changed;
fail:
    Py_DECREF(changed);
    return NULL;
}

static PyObject *routes_get_dist(Routes *self, void *Py_UNUSED(closure)) {
    PyObject *dist = PyDict_New();
    if (dist == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->graph->n; i++) {
        if (!REACHES(self, i))
            continue;
        PyObject *d = PyFloat_FromDouble(self->dist[i]);
        if (d == NULL || PyDict_SetItem(dist, PyTuple_GET_ITEM(self->graph->dpids, i), d) < 0) {
            Py_XDECREF(d);
            Py_DECREF(dist);
            return NULL;
        }
        Py_DECREF(d);
    }
    return dist;
}

static PyObject *routes_get_hops(Routes *self, void *Py_UNUSED(closure)) {
    Py_INCREF(self->hops);
    return self->hops;
}

static PyObject *routes_get_ecmp(Routes *self, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(self->ecmp);
}

static PyObject *routes_get_dst(Routes *self, void *Py_UNUSED(closure)) {
    Py_INCREF(self->dst);
    return self->dst;
}

static PyGetSetDef routes_getset[] = {
    {"dist", (getter)routes_get_dist, NULL, "switch -> distance (a copy)", NULL},
    {"hops", (getter)routes_get_hops, NULL, "switch -> Hops (read only)", NULL},
    {"ecmp", (getter)routes_get_ecmp, NULL, NULL, NULL},
    {"dst", (getter)routes_get_dst, NULL, NULL, NULL},
    {NULL},
};

static PyMethodDef routes_methods[] = {
    {"lose_edges", (PyCFunction)routes_lose_edges, METH_VARARGS, NULL},
    {"gain_edges", (PyCFunction)routes_gain_edges, METH_VARARGS, NULL},
    {"take_changed", (PyCFunction)routes_take_changed, METH_NOARGS, NULL},
    {NULL},
};

static PyTypeObject RoutesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sdn.compile._routes.DestinationRoutes",
    .tp_doc = "routing.DestinationRoutes over a RouteGraph (see the module).",
    .tp_basicsize = sizeof(Routes),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)routes_init,
    .tp_dealloc = (destructor)routes_dealloc,
    .tp_methods = routes_methods,
    .tp_getset = routes_getset,
};

static PyObject *init_hops(PyObject *Py_UNUSED(module), PyObject *type) {
    Py_INCREF(type);
    Py_XSETREF(hops_type, type);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"init", init_hops, METH_O, "init(Hops): the type the hops are made of"},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sdn.compile._routes",
    "Route repair over arrays (see sdn.compile.routing).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__routes(void) {
    if (PyType_Ready(&RouteGraphType) < 0 || PyType_Ready(&RoutesType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RouteGraphType);
    Py_INCREF(&RoutesType);
    if (PyModule_AddObject(m, "RouteGraph", (PyObject *)&RouteGraphType) < 0 ||
        PyModule_AddObject(m, "DestinationRoutes", (PyObject *)&RoutesType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
