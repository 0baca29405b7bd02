/*
 * Atomic operations and futex parking on words of a shared buffer.
 *
 * The ring algorithms live in Python (ringbuf/ring.py); this module gives them the
 * few primitives Python lacks: acquire loads, release stores, sequentially consistent
 * read-modify-writes and fences on 64-bit words inside a writable buffer (a shared-memory
 * mapping), and Linux futex wait/wake on 32-bit words of that buffer so idle consumers
 * park in the kernel instead of spinning.  docs/ringbuf.md argues why these orderings
 * make the rings correct on x86-64 and aarch64.
 *
 * The GCC/Clang __atomic builtins compile to plain MOV (+ MFENCE or XCHG for seq_cst) on
 * x86-64 and to LDAR/STLR/LDAXR-STLXR or LSE CAS/LDADD on aarch64.  Every call is an
 * opaque call from the interpreter, so the compiler cannot move the interpreter's own
 * payload copies (memoryview slice assignment) across it; the release/acquire semantics
 * order them in hardware.
 *
 * The module declares Py_MOD_GIL_NOT_USED: it keeps no global state, and each
 * SharedWords object is immutable after construction except for release(), which the
 * owner calls once no other thread uses the object.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <time.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#error "ringbuf parks threads with Linux futexes; other kernels are not supported"
#endif

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    char *base;          /* NULL once released */
    Py_ssize_t length;
} SharedWords;

static int
word_address(SharedWords *self, PyObject *arg, Py_ssize_t width, char **out)
{
    if (self->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "SharedWords used after release()");
        return -1;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(arg);
    if (offset == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (offset < 0 || offset > self->length - width || offset % width != 0) {
        PyErr_Format(PyExc_IndexError,
                     "word offset %zd is outside the buffer (%zd bytes) or not %zd-byte aligned",
                     offset, self->length, width);
        return -1;
    }
    *out = self->base + offset;
    return 0;
}

static int
read_u64(PyObject *arg, uint64_t *out)
{
    unsigned long long value = PyLong_AsUnsignedLongLong(arg);
    if (value == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (uint64_t)value;
    return 0;
}

static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, expected, nargs);
        return -1;
    }
    return 0;
}

static PyObject *
SharedWords_load(SharedWords *self, PyObject *offset)
{
    char *p;
    if (word_address(self, offset, 8, &p) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(__atomic_load_n((uint64_t *)p, __ATOMIC_ACQUIRE));
}

static PyObject *
SharedWords_store(SharedWords *self, PyObject *const *args, Py_ssize_t nargs)
{
    char *p;
    uint64_t value;
    if (check_nargs("store", nargs, 2) < 0 || word_address(self, args[0], 8, &p) < 0
        || read_u64(args[1], &value) < 0) return NULL;
    __atomic_store_n((uint64_t *)p, value, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyObject *
SharedWords_cas(SharedWords *self, PyObject *const *args, Py_ssize_t nargs)
{
    char *p;
    uint64_t expected, desired;
    if (check_nargs("cas", nargs, 3) < 0 || word_address(self, args[0], 8, &p) < 0
        || read_u64(args[1], &expected) < 0 || read_u64(args[2], &desired) < 0) return NULL;
    int swapped = __atomic_compare_exchange_n((uint64_t *)p, &expected, desired, 0,
                                              __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return PyBool_FromLong(swapped);
}

static PyObject *
SharedWords_fetch_add(SharedWords *self, PyObject *const *args, Py_ssize_t nargs)
{
    char *p;
    uint64_t delta;
    if (check_nargs("fetch_add", nargs, 2) < 0 || word_address(self, args[0], 8, &p) < 0
        || read_u64(args[1], &delta) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(__atomic_fetch_add((uint64_t *)p, delta, __ATOMIC_SEQ_CST));
}

static PyObject *
SharedWords_fence(SharedWords *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyObject *
SharedWords_load32(SharedWords *self, PyObject *offset)
{
    char *p;
    if (word_address(self, offset, 4, &p) < 0) return NULL;
    return PyLong_FromUnsignedLong(__atomic_load_n((uint32_t *)p, __ATOMIC_SEQ_CST));
}

static PyObject *
SharedWords_fetch_add32(SharedWords *self, PyObject *const *args, Py_ssize_t nargs)
{
    char *p;
    if (check_nargs("fetch_add32", nargs, 2) < 0 || word_address(self, args[0], 4, &p) < 0) return NULL;
    long delta = PyLong_AsLong(args[1]);
    if (delta == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromUnsignedLong(
        __atomic_fetch_add((uint32_t *)p, (uint32_t)delta, __ATOMIC_SEQ_CST));
}

/* Relaxed 32-bit access for slot lengths: ordered by the release/acquire operations on
 * the cursors and sequence words around them.  Done here rather than with struct on a
 * memoryview because taking a buffer from a memoryview is not thread-safe in 3.13t. */
static PyObject *
SharedWords_read_u32(SharedWords *self, PyObject *offset)
{
    char *p;
    if (word_address(self, offset, 4, &p) < 0) return NULL;
    return PyLong_FromUnsignedLong(__atomic_load_n((uint32_t *)p, __ATOMIC_RELAXED));
}

static PyObject *
SharedWords_write_u32(SharedWords *self, PyObject *const *args, Py_ssize_t nargs)
{
    char *p;
    if (check_nargs("write_u32", nargs, 2) < 0 || word_address(self, args[0], 4, &p) < 0) return NULL;
    unsigned long value = PyLong_AsUnsignedLong(args[1]);
    if (value == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (value > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
        return NULL;
    }
    __atomic_store_n((uint32_t *)p, (uint32_t)value, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

/* wait32(offset, expected, timeout_s) -> bool
 * Sleeps while the 32-bit word equals `expected`, at most timeout_s seconds.
 * Returns False on timeout, True otherwise (woken, value already changed, or a
 * signal: callers re-check their condition either way). */
static PyObject *
SharedWords_wait32(SharedWords *self, PyObject *const *args, Py_ssize_t nargs)
{
    char *p;
    if (check_nargs("wait32", nargs, 3) < 0 || word_address(self, args[0], 4, &p) < 0) return NULL;
    unsigned long expected = PyLong_AsUnsignedLong(args[1]);
    if (expected == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    double timeout = PyFloat_AsDouble(args[2]);
    if (timeout == -1.0 && PyErr_Occurred()) return NULL;
    if (timeout < 0) timeout = 0;
    struct timespec ts;
    ts.tv_sec = (time_t)timeout;
    ts.tv_nsec = (long)((timeout - (double)ts.tv_sec) * 1e9);
    long rc;
    int err = 0;
    /* Detach from the interpreter: a thread parked here must not hold up
     * stop-the-world phases of the free-threaded garbage collector. */
    Py_BEGIN_ALLOW_THREADS
    rc = syscall(SYS_futex, (uint32_t *)p, FUTEX_WAIT, (uint32_t)expected, &ts, NULL, 0);
    if (rc != 0) err = errno;
    Py_END_ALLOW_THREADS
    if (rc != 0 && err == EINTR && PyErr_CheckSignals() < 0) return NULL;
    return PyBool_FromLong(!(rc != 0 && err == ETIMEDOUT));
}

/* wake32(offset, count) -> number of threads woken (in any process). */
static PyObject *
SharedWords_wake32(SharedWords *self, PyObject *const *args, Py_ssize_t nargs)
{
    char *p;
    if (check_nargs("wake32", nargs, 2) < 0 || word_address(self, args[0], 4, &p) < 0) return NULL;
    int count = PyLong_AsInt(args[1]);
    if (count == -1 && PyErr_Occurred()) return NULL;
    long rc = syscall(SYS_futex, (uint32_t *)p, FUTEX_WAKE, count, NULL, NULL, 0);
    if (rc < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(rc);
}

static PyObject *
SharedWords_release(SharedWords *self, PyObject *Py_UNUSED(ignored))
{
    if (self->base != NULL) {
        self->base = NULL;
        PyBuffer_Release(&self->view);
    }
    Py_RETURN_NONE;
}

static int
SharedWords_init(SharedWords *self, PyObject *args, PyObject *kwds)
{
    PyObject *buffer;
    static char *kwlist[] = {"buffer", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:SharedWords", kwlist, &buffer)) return -1;
    if (self->base != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "SharedWords is already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (((uintptr_t)self->view.buf) % 8 != 0) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "buffer is not 8-byte aligned");
        return -1;
    }
    self->base = self->view.buf;
    self->length = self->view.len;
    return 0;
}

static void
SharedWords_dealloc(SharedWords *self)
{
    if (self->base != NULL) {
        PyBuffer_Release(&self->view);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef SharedWords_methods[] = {
    {"load", (PyCFunction)SharedWords_load, METH_O, "load(offset) -> acquire load of a 64-bit word"},
    {"store", (PyCFunction)(void (*)(void))SharedWords_store, METH_FASTCALL,
     "store(offset, value): release store of a 64-bit word"},
    {"cas", (PyCFunction)(void (*)(void))SharedWords_cas, METH_FASTCALL,
     "cas(offset, expected, desired) -> bool: seq_cst compare-and-swap"},
    {"fetch_add", (PyCFunction)(void (*)(void))SharedWords_fetch_add, METH_FASTCALL,
     "fetch_add(offset, delta) -> previous value (seq_cst)"},
    {"fence", (PyCFunction)SharedWords_fence, METH_NOARGS, "fence(): sequentially consistent fence"},
    {"load32", (PyCFunction)SharedWords_load32, METH_O, "load32(offset) -> seq_cst load of a 32-bit word"},
    {"fetch_add32", (PyCFunction)(void (*)(void))SharedWords_fetch_add32, METH_FASTCALL,
     "fetch_add32(offset, delta) -> previous value (seq_cst, wraps modulo 2**32)"},
    {"read_u32", (PyCFunction)SharedWords_read_u32, METH_O, "read_u32(offset) -> relaxed 32-bit load"},
    {"write_u32", (PyCFunction)(void (*)(void))SharedWords_write_u32, METH_FASTCALL,
     "write_u32(offset, value): relaxed 32-bit store"},
    {"wait32", (PyCFunction)(void (*)(void))SharedWords_wait32, METH_FASTCALL,
     "wait32(offset, expected, timeout_s) -> False on timeout: futex wait"},
    {"wake32", (PyCFunction)(void (*)(void))SharedWords_wake32, METH_FASTCALL,
     "wake32(offset, count) -> threads woken: futex wake"},
    {"release", (PyCFunction)SharedWords_release, METH_NOARGS, "release(): let go of the buffer"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SharedWordsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ringbuf._atomics.SharedWords",
    .tp_doc = "Atomic 64-bit and futex 32-bit word operations on a writable, aligned buffer.",
    .tp_basicsize = sizeof(SharedWords),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SharedWords_init,
    .tp_dealloc = (destructor)SharedWords_dealloc,
    .tp_methods = SharedWords_methods,
};

static int
atomics_exec(PyObject *module)
{
    if (PyType_Ready(&SharedWordsType) < 0) return -1;
    return PyModule_AddObjectRef(module, "SharedWords", (PyObject *)&SharedWordsType);
}

static PyModuleDef_Slot atomics_slots[] = {
    {Py_mod_exec, atomics_exec},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef atomics_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ringbuf._atomics",
    .m_doc = "Atomic word operations and futex parking for the shared-memory rings.",
    .m_size = 0,
    .m_slots = atomics_slots,
};

PyMODINIT_FUNC
PyInit__atomics(void)
{
    return PyModuleDef_Init(&atomics_module);
}
