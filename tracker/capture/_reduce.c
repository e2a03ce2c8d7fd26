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
 * reduce_many(jobs, pointers, params, out, ptr, bins, counts) -> rows to recompute:
 *   jobs     int64   (n, 8): a template (a step plan's, reused every step): column 0 ignored,
 *                            numel, histogram row (-1: none), histogram stride, extra (0 none,
 *                            1 dead units, 2 saturation), outer, units, inner. Histogram rows
 *                            count up from 0 in job order.
 *   pointers sequence of n ints: this call's data pointers (column 0), so that the caller does
 *                            not copy and fill a NumPy table every step
 *   params   float64 (n, 2): saturation centre and threshold (|x - centre| > threshold)
 *   out      float64 (n, 11): a stats row per job, columns as STAT_COLUMNS (tracker.names'
 *                            STAT_NAMES; stats.py checks they agree). A row whose moments could
 *                            not be trusted (NaN/Inf in the tensor, or std lost to cancellation)
 *                            has NaN moments and nan_count = inf_count = NaN: recompute it. The
 *                            return value counts them, so that the usual case looks at none.
 *   ptr      int64   (h + 1,): histogram r's non-empty bins are bins/counts[ptr[r]:ptr[r + 1]]
 *   bins     uint16, counts int64, of one length: written up to ptr[h]. h * 512 entries always
 *                            suffice; with fewer, entries past the end are not written and
 *                            ptr[h] > len(bins) says how many were needed (the caller reruns).
 * reduce_many_async(..., keep) -> Ticket does the same on a thread of this module's own that
 * never takes the GIL (see there); copy_prefix(src, dst) copies a prefix of a buffer.
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

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#define POOL_NICE 10

#define LANES 16
#define N_BINS 512
#define JOB_FIELDS 8
#define API_VERSION 3 /* 2: sparse histograms (ptr, bins, counts); 3: reduce_many_async */
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

/* Eight sub-histograms so that runs of equal bins (a ReLU output's zeros) do not wait on one
 * counter's store and reload. uint32 keeps them at 16 KiB, in L1 beside the data; they are folded
 * into `out` (N_BINS counts, zeroed by the caller) at least every 2^30 samples per
 * sub-histogram, so they cannot overflow. A tensor of fewer than SMALL samples (biases, small
 * layers) is counted straight into `out`: clearing and folding the sub-histograms would cost
 * more than its samples. */
#define SUBS 8
#define SMALL 2048
static void histogram(const float *x, int64_t n, int64_t stride, int64_t *out) {
    static const int64_t CHUNK = (int64_t)1 << 30;
    const uint32_t *bits = (const uint32_t *)x;
    if ((n + stride - 1) / stride < SMALL) {
        for (int64_t i = 0; i < n; i += stride) out[(bits[i] >> 23) & (N_BINS - 1)] += stride;
        return;
    }
    uint32_t sub[SUBS][N_BINS];
    int64_t i = 0;
    while (i < n) {
        memset(sub, 0, sizeof(sub));
        int64_t taken = 0;
        for (; i + (SUBS - 1) * stride < n && taken < CHUNK; i += SUBS * stride, taken++) {
            for (int s = 0; s < SUBS; s++) sub[s][(bits[i + s * stride] >> 23) & (N_BINS - 1)]++;
        }
        if (taken < CHUNK) {
            for (; i < n; i += stride) sub[0][(bits[i] >> 23) & (N_BINS - 1)]++;
        }
        for (int b = 0; b < N_BINS; b++) {
            int64_t total = 0;
            for (int s = 0; s < SUBS; s++) total += sub[s][b];
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
 * d = x - shift keeps its digits when |mean| >> std, and sum(x^2) follows exactly. Returns 0 if
 * the row could not be trusted (see the top of the file). */
static int finish_row(double *r, int64_t numel, double shift, const Moments *m) {
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
    return ok;
}

/* Append the non-empty bins of one dense row, as far as `capacity` allows; returns the new
 * number of entries, counting those that did not fit. */
static int64_t emit_sparse(const int64_t *dense, int64_t nnz, int64_t capacity, uint16_t *bins,
                           int64_t *counts) {
    for (int b = 0; b < N_BINS; b++) {
        if (dense[b]) {
            if (nnz < capacity) {
                bins[nnz] = (uint16_t)b;
                counts[nnz] = dense[b];
            }
            nnz++;
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

/* One reduce_many() call: its buffers (held, so they stay alive), its job table with this call's
 * data pointers, and, once run, its outcome. */
typedef struct Task {
    Py_buffer views[6]; /* jobs (the plan's template), params, out, ptr, bins, counts */
    int held;           /* how many views are held */
    int64_t *jobs;      /* the template with column 0 filled from `pointers` */
    Py_ssize_t n, n_hists;
    int64_t capacity; /* entries of bins and counts */
    int64_t untrusted; /* rows whose moments must be recomputed (NaN/Inf, cancellation) */
    int out_of_memory;
    int done;   /* set under pool.mu by the thread that ran it */
    int failed; /* the process forked before it ran: never run */
    struct Task *next;
} Task;

enum { JOBS, PARAMS, OUT, PTR, BINS, COUNTS };

static void task_release(Task *t) {
    while (t->held > 0) PyBuffer_Release(&t->views[--t->held]);
    PyMem_RawFree(t->jobs);
    t->jobs = NULL;
}

/* Take the buffers of `args` (jobs, pointers, params, out, ptr, bins, counts), build the job
 * table and check that everything fits together; -1 with an exception set. */
static int task_init(Task *t, PyObject *args) {
    static const char *const names[6] = {"jobs", "params", "out", "ptr", "bins", "counts"};
    PyObject *objs[6], *pointers;
    memset(t, 0, sizeof(*t));
    if (!PyArg_ParseTuple(args, "OOOOOOO", &objs[0], &pointers, &objs[1], &objs[2], &objs[3],
                          &objs[4], &objs[5]))
        return -1;
    for (int i = 0; i < 6; i++) {
        if (get_buffer(objs[i], &t->views[i], i >= OUT, names[i]) < 0) {
            task_release(t);
            return -1;
        }
        t->held++;
    }
    Py_buffer *v = t->views;
    Py_ssize_t n = v[JOBS].len / (Py_ssize_t)(JOB_FIELDS * sizeof(int64_t));
    Py_ssize_t n_hists = v[PTR].len / (Py_ssize_t)sizeof(int64_t) - 1;
    Py_ssize_t capacity = v[COUNTS].len / (Py_ssize_t)sizeof(int64_t);
    if (v[JOBS].len != n * (Py_ssize_t)(JOB_FIELDS * sizeof(int64_t)) ||
        v[PARAMS].len != n * (Py_ssize_t)(2 * sizeof(double)) ||
        v[OUT].len != n * (Py_ssize_t)(OUT_FIELDS * sizeof(double)) || n_hists < 0 ||
        v[PTR].len != (n_hists + 1) * (Py_ssize_t)sizeof(int64_t) ||
        v[COUNTS].len != capacity * (Py_ssize_t)sizeof(int64_t) ||
        v[BINS].len != capacity * (Py_ssize_t)sizeof(uint16_t)) {
        PyErr_SetString(PyExc_ValueError,
                        "reduce_many: buffer sizes do not match (n, 8), (n, 2), (n, 11), (h + 1,), "
                        "and uint16 and int64 of one length");
        task_release(t);
        return -1;
    }
    PyObject *seq = PySequence_Fast(pointers, "reduce_many: pointers must be a sequence of ints");
    if (seq == NULL) {
        task_release(t);
        return -1;
    }
    if (PySequence_Fast_GET_SIZE(seq) != n) {
        PyErr_Format(PyExc_ValueError, "reduce_many: %zd pointers for %zd jobs",
                     PySequence_Fast_GET_SIZE(seq), n);
        Py_DECREF(seq);
        task_release(t);
        return -1;
    }
    t->jobs = PyMem_RawMalloc(n > 0 ? (size_t)v[JOBS].len : 1);
    if (t->jobs == NULL) {
        Py_DECREF(seq);
        task_release(t);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(t->jobs, v[JOBS].buf, (size_t)v[JOBS].len);
    for (Py_ssize_t j = 0; j < n; j++) {
        long long address = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, j));
        if (address == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            task_release(t);
            return -1;
        }
        t->jobs[j * JOB_FIELDS] = (int64_t)address;
    }
    Py_DECREF(seq);
    const int64_t *job = t->jobs;
    Py_ssize_t next_hist = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        const int64_t *f = job + j * JOB_FIELDS;
        int hist_ok = f[2] < 0 || (f[2] == next_hist && f[2] < n_hists && f[3] >= 1);
        if (f[0] == 0 || f[1] < 1 || !hist_ok || (f[4] == 1 && f[5] * f[6] * f[7] != f[1])) {
            PyErr_Format(PyExc_ValueError, "reduce_many: job %zd is malformed", j);
            task_release(t);
            return -1;
        }
        next_hist += f[2] >= 0;
    }
    if (next_hist != n_hists) {
        PyErr_SetString(PyExc_ValueError, "reduce_many: ptr must have one entry per histogram + 1");
        task_release(t);
        return -1;
    }
    t->n = n;
    t->n_hists = n_hists;
    t->capacity = capacity;
    return 0;
}

/* The arithmetic of a task; touches no Python object, so it runs without the GIL. */
static void task_run(Task *t) {
    const int64_t *job = t->jobs;
    const double *param = (const double *)t->views[PARAMS].buf;
    double *result = (double *)t->views[OUT].buf;
    int64_t *row_ptr = (int64_t *)t->views[PTR].buf;
    uint16_t *bin_out = (uint16_t *)t->views[BINS].buf;
    int64_t *count_out = (int64_t *)t->views[COUNTS].buf;
    int64_t nnz = 0;
    row_ptr[0] = 0;
    for (Py_ssize_t j = 0; j < t->n; j++) {
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
            if (extra < 0) t->out_of_memory = 1;
        } else if (f[4] == 2) {
            extra = saturated(x, numel, (float)param[2 * j], (float)param[2 * j + 1]);
        }
        if (f[2] >= 0) {
            int64_t dense[N_BINS] = {0};
            histogram(x, numel, f[3], dense);
            nnz = emit_sparse(dense, nnz, t->capacity, bin_out, count_out);
            row_ptr[f[2] + 1] = nnz;
        }
        t->untrusted += !finish_row(r, numel, shift, &m);
        r[DEAD_FRAC] = (f[4] == 1 && f[6] > 0) ? (double)extra / (double)f[6] : NAN;
        r[SAT_FRAC] = f[4] == 2 ? (double)extra / (double)numel : NAN;
    }
}

/* Below this many elements a call keeps the GIL: releasing it lets another thread take it,
 * and getting it back can cost more than the arithmetic (tens of microseconds). */
#define KEEP_GIL_BELOW 65536

static PyObject *reduce_many(PyObject *self, PyObject *args) {
    Task t;
    if (task_init(&t, args) < 0) return NULL;
    int64_t elements = 0;
    for (Py_ssize_t j = 0; j < t.n; j++) elements += t.jobs[j * JOB_FIELDS + 1];
    if (elements < KEEP_GIL_BELOW) {
        task_run(&t);
    } else {
        Py_BEGIN_ALLOW_THREADS
        task_run(&t);
        Py_END_ALLOW_THREADS
    }
    task_release(&t);
    if (t.out_of_memory) return PyErr_NoMemory();
    return PyLong_FromLongLong(t.untrusted);
}

/* -- reduce_many_async: the same work on a thread of the kernel's own ------------------------
 *
 * Why: a Python thread that runs the kernel must take the GIL back when the kernel returns,
 * and before and after it runs Python. Each time, the training thread, which holds the GIL
 * between its torch ops, waits for that thread to get it and give it back: on a small model
 * those round trips cost the training step more than the arithmetic (bench/README.md). This
 * thread never takes the GIL. A task's buffers are held by its Ticket; the tensors the jobs
 * point to must be kept alive by the caller until the ticket says the task is done. */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work, finished;
    Task *head, *tail, *running;
    int started;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          NULL, NULL, NULL, 0};

static void *pool_main(void *unused) {
    (void)unused;
#if defined(__linux__)
    /* A background helper: when the cores are busy (data loader workers), the scheduler should
     * run the training thread first, not hand its core to this thread when it is woken. On Linux
     * this sets only this thread's nice value. Failing to is harmless. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), POOL_NICE);
#endif
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (pool.head == NULL) pthread_cond_wait(&pool.work, &pool.mu);
        Task *t = pool.head;
        pool.head = t->next;
        if (pool.head == NULL) pool.tail = NULL;
        pool.running = t;
        pthread_mutex_unlock(&pool.mu);
        task_run(t);
        pthread_mutex_lock(&pool.mu);
        pool.running = NULL;
        t->done = 1;
        pthread_cond_broadcast(&pool.finished);
    }
    return NULL;
}

/* In a forked child the thread is gone: tasks it had not finished fail (their tickets say so)
 * and the next submission starts a new thread. */
static void pool_after_fork_in_child(void) {
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.work, NULL);
    pthread_cond_init(&pool.finished, NULL);
    for (Task *t = pool.head; t != NULL; t = t->next) t->done = t->failed = 1;
    if (pool.running != NULL) pool.running->done = pool.running->failed = 1;
    pool.head = pool.tail = pool.running = NULL;
    pool.started = 0;
}

/* Queue a task (called with the GIL); -1 if the thread could not be started. */
static int pool_submit(Task *t) {
    pthread_mutex_lock(&pool.mu);
    if (!pool.started) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&thread, &attr, pool_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            pthread_mutex_unlock(&pool.mu);
            return -1;
        }
        pool.started = 1;
    }
    t->next = NULL;
    if (pool.tail != NULL) {
        pool.tail->next = t;
    } else {
        pool.head = t;
    }
    pool.tail = t;
    pthread_cond_signal(&pool.work);
    pthread_mutex_unlock(&pool.mu);
    return 0;
}

/* Wait (without the GIL) until `t` is done or `timeout` seconds passed (< 0: no limit). */
static int task_wait(Task *t, double timeout) {
    int done;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&pool.mu);
    if (timeout < 0) {
        while (!t->done) pthread_cond_wait(&pool.finished, &pool.mu);
    } else if (!t->done) {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        double whole = floor(timeout);
        deadline.tv_sec += (time_t)whole;
        deadline.tv_nsec += (long)((timeout - whole) * 1e9);
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec += 1;
            deadline.tv_nsec -= 1000000000L;
        }
        while (!t->done) {
            if (pthread_cond_timedwait(&pool.finished, &pool.mu, &deadline) == ETIMEDOUT) break;
        }
    }
    done = t->done;
    pthread_mutex_unlock(&pool.mu);
    Py_END_ALLOW_THREADS
    return done;
}

typedef struct {
    PyObject_HEAD
    Task *task;     /* NULL once its outcome was taken by wait() */
    PyObject *keep; /* what keeps the tensors alive (the caller's), dropped once they are read */
} Ticket;

static void ticket_dealloc(Ticket *self) {
    if (self->task != NULL) {
        task_wait(self->task, -1.0); /* never free what the thread may still be reading */
        task_release(self->task);
        PyMem_RawFree(self->task);
    }
    Py_XDECREF(self->keep);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *ticket_done(Ticket *self, PyObject *unused) {
    (void)unused;
    if (self->task == NULL) Py_RETURN_TRUE;
    pthread_mutex_lock(&pool.mu);
    int done = self->task->done;
    pthread_mutex_unlock(&pool.mu);
    return PyBool_FromLong(done);
}

static PyObject *ticket_wait(Ticket *self, PyObject *args) {
    PyObject *timeout_obj = Py_None;
    if (!PyArg_ParseTuple(args, "|O", &timeout_obj)) return NULL;
    double timeout = -1.0;
    if (timeout_obj != Py_None) {
        timeout = PyFloat_AsDouble(timeout_obj);
        if (timeout == -1.0 && PyErr_Occurred()) return NULL;
        if (timeout < 0) timeout = 0;
    }
    Task *t = self->task;
    if (t == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Ticket.wait: the outcome was already taken");
        return NULL;
    }
    if (!task_wait(t, timeout)) Py_RETURN_NONE;
    self->task = NULL;
    int failed = t->failed, out_of_memory = t->out_of_memory;
    long long untrusted = t->untrusted;
    task_release(t);
    PyMem_RawFree(t);
    Py_CLEAR(self->keep);
    if (failed) {
        PyErr_SetString(PyExc_RuntimeError,
                        "reduce_many_async: the process forked before this task ran");
        return NULL;
    }
    if (out_of_memory) return PyErr_NoMemory();
    return PyLong_FromLongLong(untrusted);
}

/* copy_prefix(src, dst): dst[:] = src[:len(dst)] for two C-contiguous buffers of one item size.
 * For the training thread, where every NumPy call costs microseconds more than a C call. */
static PyObject *copy_prefix(PyObject *self, PyObject *args) {
    PyObject *src_obj, *dst_obj;
    if (!PyArg_ParseTuple(args, "OO", &src_obj, &dst_obj)) return NULL;
    Py_buffer src, dst;
    if (PyObject_GetBuffer(src_obj, &src, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(dst_obj, &dst, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    int ok = src.itemsize == dst.itemsize && dst.len <= src.len;
    if (ok) memcpy(dst.buf, src.buf, (size_t)dst.len);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "copy_prefix: dst must be no longer than src, same items");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef ticket_methods[] = {
    {"done", (PyCFunction)ticket_done, METH_NOARGS, "done() -> bool: has the task finished?"},
    {"wait", (PyCFunction)ticket_wait, METH_VARARGS,
     "wait(timeout=None) -> int | None: wait (GIL released) until the task has run and return "
     "what reduce_many would have (rows to recompute); None if not done within timeout. Raises "
     "what reduce_many would have raised (MemoryError), or RuntimeError if the process forked "
     "before the task ran. Once."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TicketType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tracker.capture._reduce.Ticket",
    .tp_basicsize = sizeof(Ticket),
    .tp_dealloc = (destructor)ticket_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A reduce_many_async() task; its buffers are held until it has run.",
    .tp_methods = ticket_methods,
};

static PyObject *reduce_many_async(PyObject *self, PyObject *args) {
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "reduce_many_async(jobs, pointers, params, out, ptr, bins, counts, keep)");
        return NULL;
    }
    PyObject *buffers = PyTuple_GetSlice(args, 0, 7);
    if (buffers == NULL) return NULL;
    Task *t = PyMem_RawMalloc(sizeof(Task));
    if (t == NULL) {
        Py_DECREF(buffers);
        return PyErr_NoMemory();
    }
    int rc = task_init(t, buffers);
    Py_DECREF(buffers);
    if (rc < 0) {
        PyMem_RawFree(t);
        return NULL;
    }
    Ticket *ticket = PyObject_New(Ticket, &TicketType);
    if (ticket == NULL) {
        task_release(t);
        PyMem_RawFree(t);
        return NULL;
    }
    ticket->task = NULL;
    ticket->keep = Py_NewRef(PyTuple_GET_ITEM(args, 7));
    if (pool_submit(t) < 0) {
        task_release(t);
        PyMem_RawFree(t);
        Py_DECREF(ticket);
        PyErr_SetString(PyExc_RuntimeError, "reduce_many_async: could not start a thread");
        return NULL;
    }
    ticket->task = t;
    return (PyObject *)ticket;
}

static PyMethodDef methods[] = {
    {"reduce_many", reduce_many, METH_VARARGS,
     "reduce_many(jobs, pointers, params, out, ptr, bins, counts) -> int: summarize many "
     "float32 tensors, histograms sparse, GIL released; returns how many rows to recompute."},
    {"reduce_many_async", reduce_many_async, METH_VARARGS,
     "reduce_many_async(jobs, pointers, params, out, ptr, bins, counts, keep) -> Ticket: the "
     "same, on the kernel's own thread. The ticket holds `keep` (what keeps the pointed-to "
     "tensors alive) until the kernel is done with them."},
    {"copy_prefix", copy_prefix, METH_VARARGS,
     "copy_prefix(src, dst): dst[:] = src[:len(dst)] (same item size)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tracker.capture._reduce",
    "Fused per-tensor reductions for the stats worker (see _reduce.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__reduce(void) {
    static int fork_handler_set = 0;
    if (!fork_handler_set) {
        if (pthread_atfork(NULL, NULL, pool_after_fork_in_child) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "_reduce: pthread_atfork failed");
            return NULL;
        }
        fork_handler_set = 1;
    }
    if (PyType_Ready(&TicketType) < 0) return NULL;
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
