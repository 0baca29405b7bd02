/*
 * The ring algorithms of ringbuf/ring.py, in C, for the per-slot hot path.
 *
 * A RingCore is one thread's handle on one ring segment: claim / write / publish on the
 * producer side, take / read / release on the consumer side, and the fused put() and
 * get_many() that do a whole round in one call.  The algorithms and their orderings are
 * exactly those argued in docs/ringbuf.md (SPSC cursors; Vyukov's MPMC with per-slot
 * sequence words; event-count notification).  Layout offsets come from ringbuf/layout.py
 * through the constructor, so the layout is defined once.
 *
 * Thread safety: a RingCore binds to the first thread that moves slots through it and
 * raises the ring's error class for any other thread, so its private SPSC caches and its
 * Py_buffer are only ever touched by one thread.  A consumer waits in consume_wait():
 * spin, then park on the data event count (docs/ringbuf.md) with the interpreter released;
 * producers waiting for space park from Python, on ringbuf._atomics.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { KIND_SPSC = 1, KIND_MPMC = 2 };

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    char *base;                 /* NULL once released */
    int kind;
    uint64_t capacity, mask, stride, slot_size, header;
    uint64_t off_producer, off_consumer, off_closed;
    uint64_t off_data_epoch, off_data_waiters, off_space_epoch, off_space_waiters;
    uint64_t slot_seq, slot_length, slot_payload;
    /* SPSC: this side's private copies of the cursors (see ring.py) */
    uint64_t p_next, p_limit, c_next, c_limit;
    unsigned long thread;       /* bound thread, 0 until first use */
    PyObject *ring_error;       /* raised for misuse (wrong thread, released) */
} RingCore;

#define WORD(self, off) ((uint64_t *)((self)->base + (off)))
#define WORD32(self, off) ((uint32_t *)((self)->base + (off)))

static inline char *
slot_at(RingCore *self, uint64_t position)
{
    return self->base + self->header + (position & self->mask) * self->stride;
}

static int
enter(RingCore *self)
{
    unsigned long me = PyThread_get_thread_ident();
    if (self->base == NULL) {
        PyErr_SetString(self->ring_error, "ring handle used after detach()");
        return -1;
    }
    if (self->thread != me) {
        if (self->thread != 0) {
            PyErr_SetString(self->ring_error,
                            "this ring handle belongs to another thread; give each thread its own "
                            "with handle() or Ring.attach()");
            return -1;
        }
        self->thread = me;
    }
    return 0;
}

/* Bump the epoch and wake every parked thread, if any is parked.  The seq_cst fence
 * orders our earlier publication before the read of the waiter count (docs/ringbuf.md,
 * "Parking without lost wake-ups"). */
static void
notify(RingCore *self, uint64_t epoch_off, uint64_t waiters_off)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(WORD(self, waiters_off), __ATOMIC_ACQUIRE) != 0) {
        __atomic_fetch_add(WORD32(self, epoch_off), 1, __ATOMIC_SEQ_CST);
        syscall(SYS_futex, WORD32(self, epoch_off), FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
    }
}

static int
is_closed(RingCore *self)
{
    return __atomic_load_n(WORD(self, self->off_closed), __ATOMIC_ACQUIRE) != 0;
}

/* ------------------------------------------------------------------ producer side */

/* Claim up to n slots; *first set; returns the count (0 when full). */
static uint64_t
claim(RingCore *self, uint64_t n, uint64_t *first)
{
    if (self->kind == KIND_SPSC) {
        uint64_t next = self->p_next, free = self->p_limit - next;
        if (free < n) {
            self->p_limit = __atomic_load_n(WORD(self, self->off_consumer), __ATOMIC_ACQUIRE) + self->capacity;
            free = self->p_limit - next;
        }
        uint64_t count = free < n ? free : n;
        self->p_next = next + count;
        *first = next;
        return count;
    }
    for (;;) {
        uint64_t start = __atomic_load_n(WORD(self, self->off_producer), __ATOMIC_ACQUIRE), count = 0, seq = 0;
        while (count < n) {
            seq = __atomic_load_n((uint64_t *)(slot_at(self, start + count) + self->slot_seq), __ATOMIC_ACQUIRE);
            if (seq != start + count) break;
            count++;
        }
        if (count == 0) {
            if (seq < start) { *first = start; return 0; }     /* previous lap still there: full */
            continue;                                           /* another producer won: retry */
        }
        if (__atomic_compare_exchange_n(WORD(self, self->off_producer), &start, start + count, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            *first = start;
            return count;
        }
    }
}

static void
publish(RingCore *self, uint64_t first, uint64_t count)
{
    if (count == 0) return;
    if (self->kind == KIND_SPSC) {
        __atomic_store_n(WORD(self, self->off_producer), first + count, __ATOMIC_RELEASE);
    } else {
        for (uint64_t p = first; p < first + count; p++) {
            __atomic_store_n((uint64_t *)(slot_at(self, p) + self->slot_seq), p + 1, __ATOMIC_RELEASE);
        }
    }
    notify(self, self->off_data_epoch, self->off_data_waiters);
}

static int
write_slot(RingCore *self, uint64_t position, PyObject *data)
{
    Py_buffer src;
    if (PyObject_GetBuffer(data, &src, PyBUF_SIMPLE) < 0) return -1;
    if ((uint64_t)src.len > self->slot_size) {
        PyErr_Format(PyExc_ValueError, "payload of %zd bytes exceeds slot size %llu",
                     src.len, (unsigned long long)self->slot_size);
        PyBuffer_Release(&src);
        return -1;
    }
    char *slot = slot_at(self, position);
    memcpy(slot + self->slot_payload, src.buf, (size_t)src.len);
    __atomic_store_n((uint32_t *)(slot + self->slot_length), (uint32_t)src.len, __ATOMIC_RELAXED);
    PyBuffer_Release(&src);
    return 0;
}

static int
parse_u64(PyObject *arg, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(arg);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *out = (uint64_t)v;
    return 0;
}

static PyObject *
closed_result(void)
{
    return Py_BuildValue("(Ki)", 0ULL, -1);
}

/* try_claim(n) -> (first, count); count -1 means the ring is closed */
static PyObject *
RingCore_try_claim(RingCore *self, PyObject *arg)
{
    uint64_t n, first;
    if (enter(self) < 0 || parse_u64(arg, &n) < 0) return NULL;
    if (is_closed(self)) return closed_result();
    uint64_t count = claim(self, n, &first);
    return Py_BuildValue("(KK)", (unsigned long long)first, (unsigned long long)count);
}

static PyObject *
RingCore_publish(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t first, count;
    if (nargs != 2 || parse_u64(args[0], &first) < 0 || parse_u64(args[1], &count) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "publish(first, count)");
        return NULL;
    }
    if (enter(self) < 0) return NULL;
    publish(self, first, count);
    Py_RETURN_NONE;
}

static PyObject *
RingCore_write(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t position;
    if (nargs != 2 || parse_u64(args[0], &position) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "write(position, data)");
        return NULL;
    }
    if (enter(self) < 0 || write_slot(self, position, args[1]) < 0) return NULL;
    Py_RETURN_NONE;
}

/* put(data[, tail]) -> 1 done, 0 full, -1 closed: claim, copy, publish in one call.  A
 * tail is copied right after data (a header and a body, without joining them first). */
static PyObject *
RingCore_put(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t first;
    Py_buffer src, tail = {.buf = NULL, .len = 0};
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "put(data[, tail])");
        return NULL;
    }
    if (enter(self) < 0) return NULL;
    if (PyObject_GetBuffer(args[0], &src, PyBUF_SIMPLE) < 0) return NULL;
    if (nargs == 2 && PyObject_GetBuffer(args[1], &tail, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    long result = 1;
    uint64_t total = (uint64_t)src.len + (uint64_t)tail.len;
    if (total > self->slot_size) {  /* refuse before claiming: no hole is left */
        PyErr_Format(PyExc_ValueError, "payload of %llu bytes exceeds slot size %llu",
                     (unsigned long long)total, (unsigned long long)self->slot_size);
        result = -2;
    } else if (is_closed(self)) {
        result = -1;
    } else if (claim(self, 1, &first) == 0) {
        result = 0;
    } else {
        char *slot = slot_at(self, first);
        memcpy(slot + self->slot_payload, src.buf, (size_t)src.len);
        if (tail.len) memcpy(slot + self->slot_payload + src.len, tail.buf, (size_t)tail.len);
        __atomic_store_n((uint32_t *)(slot + self->slot_length), (uint32_t)total, __ATOMIC_RELAXED);
        publish(self, first, 1);
    }
    PyBuffer_Release(&src);
    if (nargs == 2) PyBuffer_Release(&tail);
    return result == -2 ? NULL : PyLong_FromLong(result);
}

static PyObject *
RingCore_set_length(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t position, length;
    if (nargs != 2 || parse_u64(args[0], &position) < 0 || parse_u64(args[1], &length) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "set_length(position, length)");
        return NULL;
    }
    if (enter(self) < 0) return NULL;
    if (length > self->slot_size) {
        PyErr_Format(PyExc_ValueError, "length %llu exceeds slot size %llu",
                     (unsigned long long)length, (unsigned long long)self->slot_size);
        return NULL;
    }
    __atomic_store_n((uint32_t *)(slot_at(self, position) + self->slot_length), (uint32_t)length, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

/* write_many(items, start) -> count: copy items[start:] in, in order, as far as free
 * slots allow right now, and publish them together; -1 if the ring is closed.  Stops
 * before an item larger than a slot (nothing is claimed for it: the caller says why). */
static PyObject *
write_many_locked(RingCore *self, PyObject *items, Py_ssize_t start)
{
    uint64_t first;
    Py_ssize_t total = PyList_GET_SIZE(items), fit;
    if (start < 0 || start >= total) return PyLong_FromLong(0);
    /* what fits in a slot, before claiming anything: a claimed slot must be published */
    for (fit = start; fit < total; fit++) {
        Py_ssize_t size = PyObject_Length(PyList_GET_ITEM(items, fit));
        if (size < 0) return NULL;
        if ((uint64_t)size > self->slot_size) break;
    }
    if (fit == start) return PyLong_FromLong(0);
    uint64_t count = claim(self, (uint64_t)(fit - start), &first);
    for (uint64_t i = 0; i < count; i++) {
        if (write_slot(self, first + i, PyList_GET_ITEM(items, start + (Py_ssize_t)i)) < 0) {
            /* not a buffer: the rest are published empty rather than left as a hole */
            for (uint64_t j = i; j < count; j++)
                __atomic_store_n((uint32_t *)(slot_at(self, first + j) + self->slot_length), 0, __ATOMIC_RELAXED);
            publish(self, first, count);
            return NULL;
        }
    }
    publish(self, first, count);
    return PyLong_FromUnsignedLongLong(count);
}

static PyObject *
RingCore_write_many(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *result;
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "write_many(items: list, start)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    if (enter(self) < 0) return NULL;
    if (is_closed(self)) return PyLong_FromLong(-1);
    Py_BEGIN_CRITICAL_SECTION(args[0]);  /* borrowed items: no other thread resizes the list meanwhile */
    result = write_many_locked(self, args[0], start);
    Py_END_CRITICAL_SECTION();
    return result;
}

/* ------------------------------------------------------------------ consumer side */

static uint64_t
take(RingCore *self, uint64_t n, uint64_t *first)
{
    if (self->kind == KIND_SPSC) {
        uint64_t next = self->c_next, ready = self->c_limit - next;
        if (ready < n) {
            self->c_limit = __atomic_load_n(WORD(self, self->off_producer), __ATOMIC_ACQUIRE);
            ready = self->c_limit - next;
        }
        uint64_t count = ready < n ? ready : n;
        self->c_next = next + count;
        *first = next;
        return count;
    }
    for (;;) {
        uint64_t start = __atomic_load_n(WORD(self, self->off_consumer), __ATOMIC_ACQUIRE), count = 0, seq = 0;
        while (count < n) {
            seq = __atomic_load_n((uint64_t *)(slot_at(self, start + count) + self->slot_seq), __ATOMIC_ACQUIRE);
            if (seq != start + count + 1) break;
            count++;
        }
        if (count == 0) {
            if (seq <= start) { *first = start; return 0; }    /* nothing published there yet */
            continue;                                           /* another consumer won: retry */
        }
        if (__atomic_compare_exchange_n(WORD(self, self->off_consumer), &start, start + count, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            *first = start;
            return count;
        }
    }
}

static void
release(RingCore *self, uint64_t first, uint64_t count)
{
    if (count == 0) return;
    if (self->kind == KIND_SPSC) {
        __atomic_store_n(WORD(self, self->off_consumer), first + count, __ATOMIC_RELEASE);
    } else {
        for (uint64_t p = first; p < first + count; p++) {
            __atomic_store_n((uint64_t *)(slot_at(self, p) + self->slot_seq), p + self->capacity, __ATOMIC_RELEASE);
        }
    }
    notify(self, self->off_space_epoch, self->off_space_waiters);
}

static uint32_t
slot_length(RingCore *self, uint64_t position)
{
    return __atomic_load_n((uint32_t *)(slot_at(self, position) + self->slot_length), __ATOMIC_RELAXED);
}

/* try_consume(n) -> (first, count) */
static PyObject *
RingCore_try_consume(RingCore *self, PyObject *arg)
{
    uint64_t n, first;
    if (enter(self) < 0 || parse_u64(arg, &n) < 0) return NULL;
    uint64_t count = take(self, n, &first);
    return Py_BuildValue("(KK)", (unsigned long long)first, (unsigned long long)count);
}

static PyObject *
RingCore_release(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t first, count;
    if (nargs != 2 || parse_u64(args[0], &first) < 0 || parse_u64(args[1], &count) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "release(first, count)");
        return NULL;
    }
    if (enter(self) < 0) return NULL;
    release(self, first, count);
    Py_RETURN_NONE;
}

static PyObject *
RingCore_length(RingCore *self, PyObject *arg)
{
    uint64_t position;
    if (enter(self) < 0 || parse_u64(arg, &position) < 0) return NULL;
    return PyLong_FromUnsignedLong(slot_length(self, position));
}

/* get_many(n) -> list of up to n payloads copied out as bytes (empty when none ready) */
static PyObject *
RingCore_get_many(RingCore *self, PyObject *arg)
{
    uint64_t n, first;
    if (enter(self) < 0 || parse_u64(arg, &n) < 0) return NULL;
    uint64_t count = take(self, n, &first);
    PyObject *items = PyList_New((Py_ssize_t)count);
    if (items == NULL) return NULL;  /* slots stay taken: the handle is unusable anyway */
    for (uint64_t i = 0; i < count; i++) {
        char *slot = slot_at(self, first + i);
        uint32_t length = slot_length(self, first + i);
        if (length > self->slot_size) length = (uint32_t)self->slot_size;
        PyObject *item = PyBytes_FromStringAndSize(slot + self->slot_payload, length);
        if (item == NULL) { Py_DECREF(items); return NULL; }
        PyList_SET_ITEM(items, (Py_ssize_t)i, item);
    }
    release(self, first, count);
    return items;
}

/* read_many(first, count) -> bytes: the payloads of taken slots [first, first + count),
 * back to back, each after its length as 4 bytes little-endian (one copy, one object:
 * a consumer in C walks them; the slots can be released at once). */
static PyObject *
RingCore_read_many(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t first, count, total = 0;
    if (nargs != 2 || parse_u64(args[0], &first) < 0 || parse_u64(args[1], &count) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "read_many(first, count)");
        return NULL;
    }
    if (enter(self) < 0) return NULL;
    for (uint64_t i = 0; i < count; i++) {
        uint32_t length = slot_length(self, first + i);
        total += 4 + (length > self->slot_size ? self->slot_size : length);
    }
    PyObject *blob = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (blob == NULL) return NULL;
    unsigned char *dest = (unsigned char *)PyBytes_AS_STRING(blob);
    for (uint64_t i = 0; i < count; i++) {
        uint32_t length = slot_length(self, first + i);
        if (length > self->slot_size) length = (uint32_t)self->slot_size;
        for (int b = 0; b < 4; b++) dest[b] = (unsigned char)(length >> (8 * b));
        memcpy(dest + 4, slot_at(self, first + i) + self->slot_payload, length);
        dest += 4 + length;
    }
    return blob;
}

/* Published slots waiting at the consumer cursor (or the ring is closed)? */
static int
data_ready(RingCore *self)
{
    if (is_closed(self)) return 1;
    if (self->kind == KIND_SPSC)
        return __atomic_load_n(WORD(self, self->off_producer), __ATOMIC_ACQUIRE) != self->c_next;
    uint64_t start = __atomic_load_n(WORD(self, self->off_consumer), __ATOMIC_ACQUIRE);
    uint64_t seq = __atomic_load_n((uint64_t *)(slot_at(self, start) + self->slot_seq), __ATOMIC_ACQUIRE);
    return seq == start + 1;
}

static double
monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The consumer's side of the event count (docs/ringbuf.md, "Parking without lost
 * wake-ups"): note the epoch, count ourselves parked, fence, look once more, sleep on the
 * epoch only if still nothing.  The futex wait runs detached from the interpreter, so a
 * parked thread never holds up a stop-the-world pause.  -1 with an exception set if a
 * signal handler raised. */
static int
park(RingCore *self, double timeout)
{
    uint32_t *epoch_word = WORD32(self, self->off_data_epoch);
    uint64_t *waiters = WORD(self, self->off_data_waiters);
    uint32_t epoch = __atomic_load_n(epoch_word, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(waiters, 1, __ATOMIC_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    int err = 0;
    if (!data_ready(self)) {
        struct timespec ts;
        ts.tv_sec = (time_t)timeout;
        ts.tv_nsec = (long)((timeout - (double)ts.tv_sec) * 1e9);
        Py_BEGIN_ALLOW_THREADS
        if (syscall(SYS_futex, epoch_word, FUTEX_WAIT, epoch, &ts, NULL, 0) != 0) err = errno;
        Py_END_ALLOW_THREADS
    }
    __atomic_fetch_sub(waiters, 1, __ATOMIC_SEQ_CST);
    if (err == EINTR && PyErr_CheckSignals() < 0) return -1;
    return 0;
}

/* consume_wait(n, timeout, spin, park_timeout) -> (first, count): take 1..n published
 * slots, re-checking `spin` times and then parking (at most park_timeout seconds per
 * park) while the ring is empty.  timeout < 0 waits for ever.  Count 0 on timeout; -1
 * once the ring is closed and drained (its flag read before the slots: see "Closing"). */
static PyObject *
RingCore_consume_wait(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t n, spin, first = 0, count = 0;
    if (nargs != 4 || parse_u64(args[0], &n) < 0 || parse_u64(args[2], &spin) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "consume_wait(n, timeout, spin, park_timeout)");
        return NULL;
    }
    double timeout = PyFloat_AsDouble(args[1]), park_timeout = PyFloat_AsDouble(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (enter(self) < 0) return NULL;
    double deadline = timeout < 0 ? -1.0 : monotonic_s() + timeout;
    for (;;) {
        int closed = is_closed(self);
        count = take(self, n, &first);
        if (count) break;
        if (closed)
            return Py_BuildValue("(KL)", (unsigned long long)first, -1LL);
        if (spin) {
            spin--;
            cpu_relax();
            continue;
        }
        double remaining = park_timeout;
        if (deadline >= 0) {
            double left = deadline - monotonic_s();
            if (left <= 0) break;
            if (left < remaining) remaining = left;
        }
        if (park(self, remaining) < 0) return NULL;
        if (self->base == NULL) {  /* detached by a signal handler while we slept */
            PyErr_SetString(self->ring_error, "ring handle used after detach()");
            return NULL;
        }
    }
    return Py_BuildValue("(KL)", (unsigned long long)first, (long long)count);
}

/* has_space(): what a producer parked on a full ring re-checks (docs/ringbuf.md) */
static PyObject *
RingCore_has_space(RingCore *self, PyObject *Py_UNUSED(ignored))
{
    if (self->base == NULL) Py_RETURN_TRUE;
    if (is_closed(self)) Py_RETURN_TRUE;
    if (self->kind == KIND_SPSC)
        return PyBool_FromLong(
            __atomic_load_n(WORD(self, self->off_consumer), __ATOMIC_ACQUIRE) + self->capacity != self->p_next);
    uint64_t start = __atomic_load_n(WORD(self, self->off_producer), __ATOMIC_ACQUIRE);
    uint64_t seq = __atomic_load_n((uint64_t *)(slot_at(self, start) + self->slot_seq), __ATOMIC_ACQUIRE);
    return PyBool_FromLong(seq == start);
}

static PyObject *
RingCore_detach(RingCore *self, PyObject *Py_UNUSED(ignored))
{
    if (self->base != NULL) {
        self->base = NULL;
        PyBuffer_Release(&self->view);
    }
    Py_RETURN_NONE;
}

/* RingCore(buffer, kind, capacity, stride, slot_size, offsets, ring_error)
 * offsets: (header, producer, consumer, closed, data_epoch, data_waiters,
 *           space_epoch, space_waiters, slot_seq, slot_length, slot_payload) */
static int
RingCore_init(RingCore *self, PyObject *args, PyObject *Py_UNUSED(kwds))
{
    PyObject *buffer, *ring_error;
    int kind;
    unsigned long long capacity, stride, slot_size, o[11];
    if (!PyArg_ParseTuple(args, "OiKKK(KKKKKKKKKKK)O:RingCore", &buffer, &kind, &capacity, &stride, &slot_size,
                          &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7], &o[8], &o[9], &o[10],
                          &ring_error))
        return -1;
    if (self->base != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RingCore is already initialised");
        return -1;
    }
    if ((kind != KIND_SPSC && kind != KIND_MPMC) || capacity < 2 || (capacity & (capacity - 1))) {
        PyErr_SetString(PyExc_ValueError, "bad ring kind or capacity");
        return -1;
    }
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if ((uint64_t)self->view.len < o[0] + capacity * stride || ((uintptr_t)self->view.buf) % 8 != 0) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "buffer too small for the ring, or not 8-byte aligned");
        return -1;
    }
    self->kind = kind;
    self->capacity = capacity;
    self->mask = capacity - 1;
    self->stride = stride;
    self->slot_size = slot_size;
    self->header = o[0];
    self->off_producer = o[1];
    self->off_consumer = o[2];
    self->off_closed = o[3];
    self->off_data_epoch = o[4];
    self->off_data_waiters = o[5];
    self->off_space_epoch = o[6];
    self->off_space_waiters = o[7];
    self->slot_seq = o[8];
    self->slot_length = o[9];
    self->slot_payload = o[10];
    self->base = self->view.buf;
    Py_INCREF(ring_error);
    self->ring_error = ring_error;
    self->p_next = __atomic_load_n(WORD(self, self->off_producer), __ATOMIC_ACQUIRE);
    self->c_next = __atomic_load_n(WORD(self, self->off_consumer), __ATOMIC_ACQUIRE);
    self->p_limit = self->c_next + capacity;
    self->c_limit = self->p_next;
    self->thread = 0;
    return 0;
}

static void
RingCore_dealloc(RingCore *self)
{
    if (self->base != NULL) PyBuffer_Release(&self->view);
    Py_XDECREF(self->ring_error);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL
static PyMethodDef RingCore_methods[] = {
    {"try_claim", (PyCFunction)RingCore_try_claim, METH_O, "try_claim(n) -> (first, count); count -1 if closed"},
    {"write", FASTCALL(RingCore_write), "write(position, data): copy a payload into a claimed slot"},
    {"set_length", FASTCALL(RingCore_set_length), "set_length(position, length)"},
    {"publish", FASTCALL(RingCore_publish), "publish(first, count)"},
    {"put", FASTCALL(RingCore_put), "put(data[, tail]) -> 1 done, 0 full, -1 closed"},
    {"write_many", FASTCALL(RingCore_write_many),
     "write_many(items, start) -> how many of items[start:] were copied in and published; -1 closed"},
    {"try_consume", (PyCFunction)RingCore_try_consume, METH_O, "try_consume(n) -> (first, count)"},
    {"consume_wait", FASTCALL(RingCore_consume_wait),
     "consume_wait(n, timeout, spin, park_timeout) -> (first, count); count 0 on timeout, -1 closed and drained"},
    {"length", (PyCFunction)RingCore_length, METH_O, "length(position) -> payload length of a slot"},
    {"read_many", FASTCALL(RingCore_read_many),
     "read_many(first, count) -> bytes: each taken slot's payload after its u32 LE length"},
    {"release", FASTCALL(RingCore_release), "release(first, count)"},
    {"get_many", (PyCFunction)RingCore_get_many, METH_O, "get_many(n) -> [bytes]: take, copy out, release"},
    {"has_space", (PyCFunction)RingCore_has_space, METH_NOARGS, "free slots (or closed)?"},
    {"detach", (PyCFunction)RingCore_detach, METH_NOARGS, "let go of the buffer"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RingCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ringbuf._core.RingCore",
    .tp_doc = "One thread's handle on a ring segment: the claim/publish/take/release algorithms.",
    .tp_basicsize = sizeof(RingCore),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RingCore_init,
    .tp_dealloc = (destructor)RingCore_dealloc,
    .tp_methods = RingCore_methods,
};

static int
core_exec(PyObject *module)
{
    if (PyType_Ready(&RingCoreType) < 0) return -1;
    if (PyModule_AddIntConstant(module, "SPSC", KIND_SPSC) < 0) return -1;
    if (PyModule_AddIntConstant(module, "MPMC", KIND_MPMC) < 0) return -1;
    return PyModule_AddObjectRef(module, "RingCore", (PyObject *)&RingCoreType);
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ringbuf._core",
    .m_doc = "Ring claim/publish/take/release in C.",
    .m_size = 0,
    .m_slots = core_slots,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&core_module);
}
