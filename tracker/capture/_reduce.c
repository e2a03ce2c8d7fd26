/*
 * Summaries of many float32 CPU tensors in one call, with the GIL released.
 *
 * Why a C kernel: on the CPU every eager torch op costs ~8 us of dispatch and every NumPy call
 * ~1-2 us before any arithmetic (../shared/PERF.md), and each pass over a tensor reads it again.
 * A step of a small model has dozens of small tensors, so the stats worker spent more time in
 * Python than in arithmetic, holding the GIL the training thread needs. Here one call does a
 * step's tensors: one vectorized pass per tensor for the moments (sum and sum of squares in
 * float64 about a shift, min, max, exact zeros), and, where asked, a 512-bin binade histogram,
 * dead-unit and saturation counts.
 *
 * reduce_many(jobs, params, out, ptr, bins, counts): C-contiguous buffers (NumPy arrays).
 *   jobs   int64   (n, 8): data pointer, numel, histogram row (-1: none), histogram stride,
 *                          extra (0 none, 1 dead units, 2 saturation), outer, units, inner.
 *                          Histogram rows count up from 0 in job order.
 *   params float64 (n, 2): saturation centre and threshold (|x - centre| > threshold)
 *   out    float64 (n, 11): a stats row per job, columns as STAT_COLUMNS (tracker.names'
 *                          STAT_NAMES; stats.py checks they agree). A row whose moments could
 *                          not be trusted (NaN/Inf in the tensor, or std lost to cancellation)
 *                          has NaN moments and nan_count = inf_count = NaN: recompute it.
 *   ptr    int64   (h + 1,): histogram r's non-empty bins are bins/counts[ptr[r]:ptr[r + 1]]
 *   bins   uint16  (>= h * 512,), counts int64 (same length): written up to ptr[h]
 * Histograms come out sparse (CSR) because a tensor fills a few dozen of the 512 bins: the
 * dense rows were 4 KiB per tensor per step that the writer kept for a whole segment, a fresh
 * page to fault in for every one, and a scan for the non-empty bins when the file was written.
 * Data pointers must address `numel` contiguous float32 values that stay alive for the call:
 * the Python caller (stats.py) holds the tensors. Moments ignore nothing: a NaN or Inf makes the
 * sums non-finite, and the row says "recompute precisely". The rows are finished here rather
 * than in NumPy because NumPy's two dozen calls per step held the GIL the training thread needs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 16
#define N_BINS 512
#define JOB_FIELDS 8
#define API_VERSION 2 /* 2: sparse histograms (ptr, bins, counts) */
/* The stats row, in tracker.names.STAT_NAMES order. */
enum { COUNT, MEAN, STD, MIN, MAX, NORM, ZERO_FRAC, NAN_COUNT, INF_COUNT, DEAD_FRAC, SAT_FRAC,
       OUT_FIELDS };
static const char *const STAT_COLUMNS[OUT_FIELDS] = {
    "count", "mean", "std", "min", "max", "norm", "zero_frac", "nan_count", "inf_count",
    "dead_frac", "saturated_frac"};
/* var < CANCELLATION * mean^2: the float64 sums about the shift lost var's digits anyway. */
#define CANCELLATION 1e-4

/* One build runs fast on every x86-64: the loader picks the widest clone the CPU supports. */
#if defined(__x86_64__) && defined(__linux__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define MULTI_VERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef MULTI_VERSION
#define MULTI_VERSION
#endif

typedef struct {
    double s1, s2;
    float lo, hi;
    int64_t zeros;
} Moments;

/* Lanes are independent accumulators, so the compiler can vectorize without reassociating. */
MULTI_VERSION
static void moments(const float *x, int64_t n, double shift, Moments *m) {
    double s1[LANES] = {0}, s2[LANES] = {0};
    float lo[LANES], hi[LANES];
    int32_t zeros[LANES] = {0};
    int64_t zero_total = 0;
    for (int k = 0; k < LANES; k++) {
        lo[k] = INFINITY;
        hi[k] = -INFINITY;
    }
    int64_t i = 0;
    const int64_t full = n - n % LANES;
    while (i < full) {
        /* int32 lane counters are flushed before they could overflow */
        int64_t stop = full - i > ((int64_t)1 << 30) ? i + ((int64_t)1 << 30) : full;
        for (; i < stop; i += LANES) {
            for (int k = 0; k < LANES; k++) {
                float v = x[i + k];
                double d = (double)v - shift;
                s1[k] += d;
                s2[k] += d * d;
                lo[k] = v < lo[k] ? v : lo[k];
                hi[k] = v > hi[k] ? v : hi[k];
                zeros[k] += v == 0.0f;
            }
        }
        for (int k = 0; k < LANES; k++) {
            zero_total += zeros[k];
            zeros[k] = 0;
        }
    }
    double t1 = 0, t2 = 0;
    float tlo = INFINITY, thi = -INFINITY;
    for (int k = 0; k < LANES; k++) {
        t1 += s1[k];
        t2 += s2[k];
        tlo = lo[k] < tlo ? lo[k] : tlo;
        thi = hi[k] > thi ? hi[k] : thi;
    }
    for (; i < n; i++) {
        float v = x[i];
        double d = (double)v - shift;
        t1 += d;
        t2 += d * d;
        tlo = v < tlo ? v : tlo;
        thi = v > thi ? v : thi;
        zero_total += v == 0.0f;
    }
    m->s1 = t1;
    m->s2 = t2;
    m->lo = tlo;
    m->hi = thi;
    m->zeros = zero_total;
}

/* Four sub-histograms so that runs of equal bins do not serialize on one counter. uint32 keeps
 * them at 8 KiB, beside the data in L1; they are folded into `out` (N_BINS counts, zeroed by the
 * caller) at least every 2^30 samples per sub-histogram, so they cannot overflow. */
static void histogram(const float *x, int64_t n, int64_t stride, int64_t *out) {
    static const int64_t CHUNK = (int64_t)1 << 30;
    uint32_t sub[4][N_BINS];
    const uint32_t *bits = (const uint32_t *)x;
    int64_t i = 0;
    while (i < n) {
        memset(sub, 0, sizeof(sub));
        int64_t taken = 0;
        for (; i + 3 * stride < n && taken < CHUNK; i += 4 * stride, taken++) {
            sub[0][(bits[i] >> 23) & (N_BINS - 1)]++;
            sub[1][(bits[i + stride] >> 23) & (N_BINS - 1)]++;
            sub[2][(bits[i + 2 * stride] >> 23) & (N_BINS - 1)]++;
            sub[3][(bits[i + 3 * stride] >> 23) & (N_BINS - 1)]++;
        }
        if (taken < CHUNK) {
            for (; i < n; i += stride) sub[0][(bits[i] >> 23) & (N_BINS - 1)]++;
        }
        for (int b = 0; b < N_BINS; b++) {
            int64_t total = (int64_t)sub[0][b] + sub[1][b] + sub[2][b] + sub[3][b];
            out[b] += total * stride;
        }
    }
}

/* A unit is alive once one of its values is > 0 or NaN (NumPy's max would be NaN, not <= 0),
 * i.e. !(v <= 0). Checked in chunks the compiler vectorizes, stopping at the first live chunk:
 * in a ReLU output most units fire within their first few values, so the common case reads a
 * sliver of the tensor instead of all of it; a dead unit is read in full, as it must be. */
static inline int block_alive(const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        int any = 0;
        for (int k = 0; k < LANES; k++) any |= !(x[i + k] <= 0.0f);
        if (any) return 1;
    }
    for (; i < n; i++) {
        if (!(x[i] <= 0.0f)) return 1;
    }
    return 0;
}

/* (..., F): units are contiguous within a row; marks them row by row (vectorized) and stops
 * once all are alive, checked every 8 rows. Returns the number alive. */
MULTI_VERSION
static int64_t alive_in_rows(const float *x, int64_t rows, int64_t units, unsigned char *alive) {
    int64_t n_alive = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * units;
        for (int64_t u = 0; u < units; u++) alive[u] |= !(row[u] <= 0.0f);
        if ((r & 7) == 7 || r == rows - 1) {
            n_alive = 0;
            for (int64_t u = 0; u < units; u++) n_alive += alive[u];
            if (n_alive == units) break;
        }
    }
    return n_alive;
}

/* Units that never fire: every value of the unit, over all axes but the units axis, is <= 0.
 * -1 if out of memory. Units found alive are not read again. */
static int64_t dead_units(const float *x, int64_t outer, int64_t units, int64_t inner) {
    if (units <= 0) return 0;
    unsigned char *alive = calloc((size_t)units, 1);
    if (alive == NULL) return -1;
    int64_t n_alive = 0;
    if (inner == 1) {
        n_alive = outer > 0 ? alive_in_rows(x, outer, units, alive) : 0;
    } else {
        for (int64_t o = 0; o < outer && n_alive < units; o++) {
            const float *sample = x + o * units * inner;  /* (N, C, ...): a block per unit */
            for (int64_t u = 0; u < units; u++) {
                if (!alive[u] && block_alive(sample + u * inner, inner)) {
                    alive[u] = 1;
                    n_alive++;
                }
            }
        }
    }
    free(alive);
    return units - n_alive;
}

MULTI_VERSION
static int64_t saturated(const float *x, int64_t n, float centre, float threshold) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++) count += fabsf(x[i] - centre) > threshold;
    return count;
}

/* Mean, std, min, max and norm from the sums about `shift`: var = E[d^2] - E[d]^2 over
 * d = x - shift keeps its digits when |mean| >> std, and sum(x^2) follows exactly. */
static void finish_row(double *r, int64_t numel, double shift, const Moments *m) {
    double n = (double)numel;
    double d_mean = m->s1 / n;
    double var = m->s2 / n - d_mean * d_mean;
    if (var < 0.0) var = 0.0;
    int ok = isfinite(m->s1) && isfinite(m->s2) &&
             (numel == 1 || var >= CANCELLATION * d_mean * d_mean);
    r[COUNT] = n;
    r[ZERO_FRAC] = (double)m->zeros / n;
    if (ok) {
        double sumsq = m->s2 + 2.0 * shift * m->s1 + n * shift * shift;
        r[MEAN] = shift + d_mean;
        r[STD] = sqrt(var);
        r[MIN] = m->lo;
        r[MAX] = m->hi;
        r[NORM] = sqrt(sumsq > 0.0 ? sumsq : 0.0);
        r[NAN_COUNT] = 0.0;
        r[INF_COUNT] = 0.0;
    } else {
        r[MEAN] = r[STD] = r[MIN] = r[MAX] = r[NORM] = NAN;
        r[NAN_COUNT] = r[INF_COUNT] = NAN;
    }
}

/* Append the non-empty bins of one dense row; returns the new number of entries. */
static int64_t emit_sparse(const int64_t *dense, int64_t nnz, uint16_t *bins, int64_t *counts) {
    for (int b = 0; b < N_BINS; b++) {
        if (dense[b]) {
            bins[nnz] = (uint16_t)b;
            counts[nnz++] = dense[b];
        }
    }
    return nnz;
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s buffer", name,
                     writable ? " writable" : "");
        return -1;
    }
    return 0;
}

static PyObject *reduce_many(PyObject *self, PyObject *args) {
    PyObject *jobs_obj, *params_obj, *out_obj, *ptr_obj, *bins_obj, *counts_obj;
    if (!PyArg_ParseTuple(args, "OOOOOO", &jobs_obj, &params_obj, &out_obj, &ptr_obj, &bins_obj,
                          &counts_obj))
        return NULL;
    Py_buffer jobs, params, out, ptr, bins, counts;
    if (get_buffer(jobs_obj, &jobs, 0, "jobs") < 0) return NULL;
    if (get_buffer(params_obj, &params, 0, "params") < 0) goto fail_jobs;
    if (get_buffer(out_obj, &out, 1, "out") < 0) goto fail_params;
    if (get_buffer(ptr_obj, &ptr, 1, "ptr") < 0) goto fail_out;
    if (get_buffer(bins_obj, &bins, 1, "bins") < 0) goto fail_ptr;
    if (get_buffer(counts_obj, &counts, 1, "counts") < 0) goto fail_bins;

    Py_ssize_t n = jobs.len / (Py_ssize_t)(JOB_FIELDS * sizeof(int64_t));
    Py_ssize_t n_hists = ptr.len / (Py_ssize_t)sizeof(int64_t) - 1;
    Py_ssize_t capacity = counts.len / (Py_ssize_t)sizeof(int64_t);
    if (jobs.len != n * (Py_ssize_t)(JOB_FIELDS * sizeof(int64_t)) ||
        params.len != n * (Py_ssize_t)(2 * sizeof(double)) ||
        out.len != n * (Py_ssize_t)(OUT_FIELDS * sizeof(double)) || n_hists < 0 ||
        ptr.len != (n_hists + 1) * (Py_ssize_t)sizeof(int64_t) ||
        counts.len != capacity * (Py_ssize_t)sizeof(int64_t) ||
        bins.len != capacity * (Py_ssize_t)sizeof(uint16_t) || capacity < n_hists * N_BINS) {
        PyErr_SetString(PyExc_ValueError,
                        "reduce_many: buffer sizes do not match (n, 8), (n, 2), (n, 11), (h + 1,), "
                        "uint16 and int64 (>= h * 512,)");
        goto fail_all;
    }
    const int64_t *job = (const int64_t *)jobs.buf;
    Py_ssize_t next_hist = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        const int64_t *f = job + j * JOB_FIELDS;
        int hist_ok = f[2] < 0 || (f[2] == next_hist && f[2] < n_hists && f[3] >= 1);
        if (f[0] == 0 || f[1] < 1 || !hist_ok || (f[4] == 1 && f[5] * f[6] * f[7] != f[1])) {
            PyErr_Format(PyExc_ValueError, "reduce_many: job %zd is malformed", j);
            goto fail_all;
        }
        next_hist += f[2] >= 0;
    }
    if (next_hist != n_hists) {
        PyErr_SetString(PyExc_ValueError, "reduce_many: ptr must have one entry per histogram + 1");
        goto fail_all;
    }
    const double *param = (const double *)params.buf;
    double *result = (double *)out.buf;
    int64_t *row_ptr = (int64_t *)ptr.buf;
    uint16_t *bin_out = (uint16_t *)bins.buf;
    int64_t *count_out = (int64_t *)counts.buf;
    int64_t nnz = 0;
    int out_of_memory = 0;

    Py_BEGIN_ALLOW_THREADS
    if (n_hists >= 0) row_ptr[0] = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        const int64_t *f = job + j * JOB_FIELDS;
        const float *x = (const float *)(uintptr_t)f[0];
        const int64_t numel = f[1];
        double *r = result + j * OUT_FIELDS;
        /* About the first element: keeps var = E[d^2] - E[d]^2 exact when |mean| >> std. */
        double shift = isfinite(x[0]) ? (double)x[0] : 0.0;
        Moments m;
        moments(x, numel, shift, &m);
        int64_t extra = 0;
        if (f[4] == 1) {
            extra = dead_units(x, f[5], f[6], f[7]);
            if (extra < 0) out_of_memory = 1;
        } else if (f[4] == 2) {
            extra = saturated(x, numel, (float)param[2 * j], (float)param[2 * j + 1]);
        }
        if (f[2] >= 0) {
            int64_t dense[N_BINS] = {0};
            histogram(x, numel, f[3], dense);
            nnz = emit_sparse(dense, nnz, bin_out, count_out);
            row_ptr[f[2] + 1] = nnz;
        }
        finish_row(r, numel, shift, &m);
        r[DEAD_FRAC] = (f[4] == 1 && f[6] > 0) ? (double)extra / (double)f[6] : NAN;
        r[SAT_FRAC] = f[4] == 2 ? (double)extra / (double)numel : NAN;
    }
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&counts);
    PyBuffer_Release(&bins);
    PyBuffer_Release(&ptr);
    PyBuffer_Release(&out);
    PyBuffer_Release(&params);
    PyBuffer_Release(&jobs);
    if (out_of_memory) return PyErr_NoMemory();
    Py_RETURN_NONE;

fail_all:
    PyBuffer_Release(&counts);
fail_bins:
    PyBuffer_Release(&bins);
fail_ptr:
    PyBuffer_Release(&ptr);
fail_out:
    PyBuffer_Release(&out);
fail_params:
    PyBuffer_Release(&params);
fail_jobs:
    PyBuffer_Release(&jobs);
    return NULL;
}

static PyMethodDef methods[] = {
    {"reduce_many", reduce_many, METH_VARARGS,
     "reduce_many(jobs, params, out, ptr, bins, counts): summarize many float32 tensors, "
     "histograms sparse, GIL released."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tracker.capture._reduce",
    "Fused per-tensor reductions for the stats worker (see _reduce.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__reduce(void) {
    PyObject *mod = PyModule_Create(&module);
    if (mod == NULL) return NULL;
    PyObject *columns = PyTuple_New(OUT_FIELDS);
    if (columns == NULL) goto fail;
    for (int i = 0; i < OUT_FIELDS; i++) {
        PyObject *name = PyUnicode_FromString(STAT_COLUMNS[i]);
        if (name == NULL) {
            Py_DECREF(columns);
            goto fail;
        }
        PyTuple_SET_ITEM(columns, i, name);
    }
    if (PyModule_AddObject(mod, "STAT_COLUMNS", columns) < 0) {
        Py_DECREF(columns);
        goto fail;
    }
    /* Bumped when reduce_many's arguments change; stats.py ignores a build of another one. */
    if (PyModule_AddIntConstant(mod, "API_VERSION", API_VERSION) < 0) goto fail;
    return mod;
fail:
    Py_DECREF(mod);
    return NULL;
}
