/* What _fast.c shares with the other C files of the extension (_xsk.c). */
#ifndef NFV_FAST_H
#define NFV_FAST_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* `cache` as the C loops take it: a FlowCache, or NULL for None; NULL with a TypeError set
 * (and *ok 0) for anything else. */
PyObject *fast_cache_arg(PyObject *cache, int *ok);

/* The flow cache's fast path for `frame`: 1 taken (forward it as it now is), 0 not for the
 * cache, -1 a Python error. */
int fast_cache_lookup(PyObject *cache, uint8_t *frame, Py_ssize_t n, int side, double now);

/* One frame, already in scratch, through `process(view, length, side, now)` (argv holds view,
 * side and now; argv[1] is set here): its verdict (0 forward, 1 drop, 2 bounce) and the length
 * of what to send, which is in scratch. 0, or -1 with a Python error set. Files the entry the
 * function offered in `cache` (or NULL). */
int fast_process(PyObject *process, PyObject **argv, uint32_t length, Py_ssize_t scratch_len,
                 PyObject *cache, long *verdict, long *out_length);

#ifdef HAVE_XSK
/* Adds the XskPair type (_xsk.c) to the module. */
int xsk_add_type(PyObject *module);
#endif

#endif
