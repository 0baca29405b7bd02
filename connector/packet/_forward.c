/* The worker's common packet in C.
 *
 * `Forwarder.prepare` does what `Worker._on_prepare` does for a Prepare that is forwarded
 * (read it, route it, convert its amount, shorten its expiry, reserve both legs through
 * the books' lane, rewrite it in place, note it in flight, hand it to the next hop's I/O
 * thread) in one call, with no Python frame.  `Forwarder.fulfill` does what `_on_reply`
 * does for a Fulfill whose fulfillment hashes to its Prepare's condition: take it out of
 * flight, commit both legs through the lane with the reply held until durable, and count
 * it in telemetry.
 *
 * Anything else answers False *having changed nothing*, and the worker runs the Python
 * method, which is the reference and the only place a packet is rejected: an unknown or
 * rate-limited source, a packet the C reader does not accept, ILDCP, an amount over the
 * source's maximum, no route, a next hop that is not connected, another asset code, an
 * amount that does not fit 64 bits after conversion, too little time left, a reservation
 * the lane leaves to the books; a Reject, a malformed or wrong Fulfill, a reply no longer
 * in flight.  Once a Fulfill is out of flight, a post the lane leaves to the books goes to
 * the worker's `_commit_generally`.  tests/packet/test_packet_forwarder.py holds the two
 * paths to the same egress records, held replies, in-flight entries and balances.
 *
 * `IdSource` is the worker's packet and request ids (`Worker._new_ids`): a packet id
 * unique in the run, and a BTP request id whose low bits name the worker and that is never
 * 0.  The forwarder takes the next pair only once the lane has reserved, so a Prepare that
 * falls back gets the very ids the C path would have used.
 *
 * One forwarder and one id source per worker thread, used by that thread only; the
 * tables it reads (peers, connected peers, every worker's in-flight entries) are dicts
 * read with `PyDict_GetItemRef` and changed with `PyDict_SetItem` / `PyDict_Pop`, which
 * take each dict's own critical section.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef unsigned __int128 u128;

#define MAX_AMOUNT UINT64_MAX
#define NS_PER_MS 1000000LL

/* slots.py's EGRESS header ("<BBHIIIQ": kind, 0, peer, connection, request, 0, ns). */
enum { EGRESS_HEADER = 24, EGRESS_PREPARE = 1, EGRESS_REPLY = 2 };
enum { ILP_FULFILL = 13 };

/* InFlight's fields, read by `fulfill` (interned once). */
enum { F_PACKET_ID, F_IN_PEER, F_IN_IO, F_IN_CONNECTION, F_IN_REQUEST, F_OUT_PEER, F_AMOUNT_IN, F_AMOUNT_OUT,
       F_CONDITION, F_RECEIVED_NS, F_COUNT };
static const char *const FIELD_TEXT[F_COUNT] = {
    "packet_id", "in_peer", "in_io", "in_connection", "in_request", "out_peer", "amount_in", "amount_out",
    "condition", "received_ns",
};
static PyObject *fields[F_COUNT];
static PyObject *digest_name;

/* ------------------------------------------------------------------ IdSource */

typedef struct {
    PyObject_HEAD
    uint64_t issued;       /* ids handed out so far */
    uint64_t worker;       /* the worker's index, in the low bits of both ids */
    unsigned bits;         /* how many low bits name the worker */
    uint64_t request_space;  /* request ids cycle through [1, request_space) before the worker bits */
} IdSourceObject;

/* The ids of the n-th pair (n >= 1). */
static void
ids_of(IdSourceObject *self, uint64_t n, uint64_t *packet_id, uint64_t *request_id)
{
    uint64_t sequence = n % (self->request_space - 1) + 1;
    *packet_id = n << self->bits | self->worker;
    *request_id = sequence << self->bits | self->worker;
}

static PyObject *
IdSource_next(IdSourceObject *self, PyObject *Py_UNUSED(ignored))
{
    uint64_t packet_id, request_id;
    ids_of(self, ++self->issued, &packet_id, &request_id);
    return Py_BuildValue("(KK)", (unsigned long long)packet_id, (unsigned long long)request_id);
}

static int
IdSource_init(IdSourceObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"worker", "worker_bits", NULL};
    unsigned long long worker;
    unsigned int bits;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KI", keywords, &worker, &bits)) return -1;
    if (bits == 0 || bits > 16 || worker >= (1ULL << bits)) {
        PyErr_SetString(PyExc_ValueError, "need 0 < worker_bits <= 16 and worker < 2**worker_bits");
        return -1;
    }
    self->issued = 0;
    self->worker = worker;
    self->bits = bits;
    self->request_space = 1ULL << (32 - bits);
    return 0;
}

static PyMethodDef IdSource_methods[] = {
    {"next", (PyCFunction)IdSource_next, METH_NOARGS, "next() -> (packet_id, request_id)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject IdSourceType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "connector.packet._forward.IdSource",
    .tp_doc = "A worker's packet and BTP request ids (one thread only).",
    .tp_basicsize = sizeof(IdSourceObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)IdSource_init,
    .tp_methods = IdSource_methods,
};

/* ------------------------------------------------------------------ Forwarder */

typedef struct {
    PyObject_HEAD
    PyObject *peers;          /* dict: peer index -> (asset code, scale, max packet amount or None, plain source) */
    PyObject *resolve;        /* destination -> peer index or None */
    PyObject *peer_io;        /* dict: connected peer -> I/O thread index */
    PyObject *ids;            /* IdSource */
    PyObject *reserve;        /* the lane's reserve */
    PyObject *read_prepare;   /* codec: prepare_fields */
    PyObject *write_prepare;  /* codec: write_prepare_fields */
    PyObject *inflight;       /* dict: (out peer, request id) -> InFlight */
    PyObject *inflight_type;  /* InFlight */
    PyObject *deadlines;      /* list: the worker's heap of (deadline ns, key) */
    PyObject *heappush;
    PyObject *puts;           /* tuple: per I/O thread, its egress ring's put(data[, tail]) */
    PyObject *send;           /* the worker's _send: when the ring is full (it waits) or closed */
    PyObject *woken;          /* set: I/O threads to wake after this batch */
    PyObject *ildcp;          /* str: ILDCP's destination */
    PyObject *tables;         /* list: every worker's in-flight dict (a reply names its owner) */
    PyObject *fulfillment_of; /* codec: fulfillment_of */
    PyObject *sha256;         /* hashlib.sha256 */
    PyObject *commit;         /* the lane's commit */
    PyObject *commit_generally;  /* the worker's: the books' commit, or R00 upstream */
    PyObject *telemetry;      /* the telemetry emitter's packet(), or None */
    PyObject *fulfilled;      /* Outcome.FULFILLED */
    long long min_window_ms, max_hold_ms;
    uint64_t owner_mask;      /* a request id's low bits: the worker that forwarded it */
} ForwarderObject;

static long long
clock_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ExpiryPolicy.outgoing_expiry: the expiry to forward with, or -1 (too little time left). */
static long long
outgoing_expiry(ForwarderObject *self, long long incoming_ms, long long now_ms)
{
    if (incoming_ms <= now_ms) return -1;
    long long outgoing = incoming_ms - self->min_window_ms;
    if (now_ms + self->max_hold_ms < outgoing) outgoing = now_ms + self->max_hold_ms;
    return outgoing - now_ms < self->min_window_ms ? -1 : outgoing;
}

/* policy.convert_amount within one asset code, kept to 64 bits: 0 converted, 1 not here. */
static int
convert(uint64_t amount, long scale_in, long scale_out, uint64_t *out)
{
    u128 value = amount;
    for (long shift = scale_out - scale_in; shift > 0; shift--) {
        value *= 10;
        if (value > MAX_AMOUNT) return 1;
    }
    for (long shift = scale_in - scale_out; shift > 0 && value; shift--) value /= 10;
    *out = (uint64_t)value;
    return 0;
}

/* A peer's entry in the peers table, checked: a new reference or NULL (error set or not). */
static PyObject *
peer_entry(ForwarderObject *self, PyObject *index)
{
    PyObject *entry;
    if (PyDict_GetItemRef(self->peers, index, &entry) <= 0) return NULL;
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 4) {
        Py_DECREF(entry);
        return NULL;
    }
    return entry;
}

static void
put_le(unsigned char *p, int n, uint64_t v)
{
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Hand the rewritten Prepare to the next hop's I/O thread: its ring's put, or the
 * worker's _send when the ring is full or closed.  0, or -1 on error. */
static int
hand_over(ForwarderObject *self, Py_ssize_t io, PyObject *io_obj, uint64_t out_peer, uint64_t request,
          uint64_t received_ns, PyObject *body)
{
    unsigned char header[EGRESS_HEADER] = {0};
    header[0] = EGRESS_PREPARE;
    put_le(header + 2, 2, out_peer);
    put_le(header + 8, 4, request);
    put_le(header + 16, 8, received_ns);
    PyObject *head = PyBytes_FromStringAndSize((const char *)header, EGRESS_HEADER);
    if (head == NULL) return -1;
    PyObject *args[2] = {head, body};
    PyObject *done = PyObject_Vectorcall(PyTuple_GET_ITEM(self->puts, io), args, 2, NULL);
    Py_DECREF(head);
    if (done == NULL) return -1;
    long put = PyLong_AsLong(done);
    Py_DECREF(done);
    if (put == -1 && PyErr_Occurred()) return -1;
    if (put == 1) return PySet_Add(self->woken, io_obj);
    /* full or closed: the worker's own path waits, or says why (and marks the wake-up) */
    PyObject *kind = PyLong_FromLong(EGRESS_PREPARE), *peer = PyLong_FromUnsignedLongLong(out_peer),
             *zero = PyLong_FromLong(0), *req = PyLong_FromUnsignedLongLong(request),
             *ns = PyLong_FromUnsignedLongLong(received_ns);
    PyObject *r = NULL;
    if (kind && peer && zero && req && ns) {
        PyObject *send_args[7] = {io_obj, kind, peer, zero, req, ns, body};
        r = PyObject_Vectorcall(self->send, send_args, 7, NULL);
    }
    Py_XDECREF(kind);
    Py_XDECREF(peer);
    Py_XDECREF(zero);
    Py_XDECREF(req);
    Py_XDECREF(ns);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

enum { A_IO, A_PEER, A_CONNECTION, A_REQUEST, A_RECEIVED, A_BODY, A_COUNT };

/* prepare(io, peer, connection, request, received_ns, body) -> bool */
static PyObject *
Forwarder_prepare(ForwarderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != A_COUNT) {
        PyErr_SetString(PyExc_TypeError, "prepare(io, peer, connection, request, received_ns, body)");
        return NULL;
    }
    PyObject *source = NULL, *fields = NULL, *out_peer_obj = NULL, *target = NULL, *out_io_obj = NULL;
    PyObject *result = NULL, *reserved = NULL;
    if ((source = peer_entry(self, args[A_PEER])) == NULL) goto not_here_or_error;
    if (PyTuple_GET_ITEM(source, 3) != Py_True) goto not_here;
    fields = PyObject_CallOneArg(self->read_prepare, args[A_BODY]);
    if (fields == NULL) goto done;
    if (!PyTuple_CheckExact(fields) || PyTuple_GET_SIZE(fields) != 5) goto not_here;
    PyObject *base = PyTuple_GET_ITEM(fields, 0), *amount_obj = PyTuple_GET_ITEM(fields, 1);
    PyObject *condition = PyTuple_GET_ITEM(fields, 3), *destination = PyTuple_GET_ITEM(fields, 4);
    int is_ildcp = PyUnicode_Compare(destination, self->ildcp) == 0;
    if (is_ildcp || PyErr_Occurred()) goto not_here_or_error;
    uint64_t amount = PyLong_AsUnsignedLongLong(amount_obj);
    long long incoming_ms = PyLong_AsLongLong(PyTuple_GET_ITEM(fields, 2));
    if (PyErr_Occurred()) goto done;
    PyObject *max_amount = PyTuple_GET_ITEM(source, 2);
    if (max_amount != Py_None) {
        int over = PyObject_RichCompareBool(amount_obj, max_amount, Py_GT);
        if (over != 0) goto not_here_or_error;
    }
    out_peer_obj = PyObject_CallOneArg(self->resolve, destination);
    if (out_peer_obj == NULL) goto done;
    if (out_peer_obj == Py_None || !PyLong_CheckExact(out_peer_obj)) goto not_here;
    int same = PyObject_RichCompareBool(out_peer_obj, args[A_PEER], Py_EQ);
    if (same != 0) goto not_here_or_error;
    if ((target = peer_entry(self, out_peer_obj)) == NULL) goto not_here_or_error;
    int rc = PyDict_GetItemRef(self->peer_io, out_peer_obj, &out_io_obj);
    if (rc <= 0) goto not_here_or_error;
    Py_ssize_t out_io = PyLong_AsSsize_t(out_io_obj);
    if (out_io == -1 && PyErr_Occurred()) goto done;
    if (out_io < 0 || out_io >= PyTuple_GET_SIZE(self->puts)) goto not_here;
    int same_code = PyUnicode_Compare(PyTuple_GET_ITEM(source, 0), PyTuple_GET_ITEM(target, 0)) == 0;
    if (!same_code) goto not_here_or_error;
    long scale_in = PyLong_AsLong(PyTuple_GET_ITEM(source, 1)), scale_out = PyLong_AsLong(PyTuple_GET_ITEM(target, 1));
    if (PyErr_Occurred()) goto done;
    uint64_t out_amount;
    if (convert(amount, scale_in, scale_out, &out_amount) != 0) goto not_here;
    long long now_ms = clock_ns(CLOCK_REALTIME) / NS_PER_MS;
    long long expiry_ms = outgoing_expiry(self, incoming_ms, now_ms);
    if (expiry_ms < 0) goto not_here;

    IdSourceObject *ids = (IdSourceObject *)self->ids;
    uint64_t packet_id, request_out;
    ids_of(ids, ids->issued + 1, &packet_id, &request_out);
    PyObject *packet_obj = PyLong_FromUnsignedLongLong(packet_id);
    PyObject *out_amount_obj = PyLong_FromUnsignedLongLong(out_amount);
    if (packet_obj == NULL || out_amount_obj == NULL) {
        Py_XDECREF(packet_obj);
        Py_XDECREF(out_amount_obj);
        goto done;
    }
    PyObject *reserve_args[6] = {packet_obj, args[A_PEER], amount_obj, out_peer_obj, out_amount_obj, condition};
    reserved = PyObject_Vectorcall(self->reserve, reserve_args, 6, NULL);
    if (reserved == NULL || reserved != Py_True) {  /* an error, or the books must answer */
        Py_DECREF(packet_obj);
        Py_DECREF(out_amount_obj);
        if (reserved == NULL) goto done;
        goto not_here;
    }
    ids->issued++;  /* reserved: from here on the packet is ours to forward */

    PyObject *expiry_obj = PyLong_FromLongLong(expiry_ms);
    PyObject *write_args[4] = {args[A_BODY], base, out_amount_obj, expiry_obj};
    PyObject *written = expiry_obj == NULL ? NULL : PyObject_Vectorcall(self->write_prepare, write_args, 4, NULL);
    Py_XDECREF(expiry_obj);
    int ok = written == Py_True;
    Py_XDECREF(written);
    if (!ok) {
        Py_DECREF(packet_obj);
        Py_DECREF(out_amount_obj);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "a reserved Prepare could not be rewritten in place");
        goto done;
    }
    long long deadline = clock_ns(CLOCK_MONOTONIC) + (expiry_ms - now_ms) * NS_PER_MS;
    PyObject *deadline_obj = PyLong_FromLongLong(deadline), *request_obj = PyLong_FromUnsignedLongLong(request_out);
    PyObject *key = NULL, *entry = NULL, *item = NULL, *pushed = NULL;
    if (deadline_obj && request_obj && (key = PyTuple_Pack(2, out_peer_obj, request_obj)) != NULL) {
        PyObject *fields_of_entry[11] = {
            packet_obj, args[A_PEER], args[A_IO], args[A_CONNECTION], args[A_REQUEST], out_peer_obj,
            amount_obj, out_amount_obj, condition, deadline_obj, args[A_RECEIVED],
        };
        entry = PyObject_Vectorcall(self->inflight_type, fields_of_entry, 11, NULL);
        if (entry != NULL && PyDict_SetItem(self->inflight, key, entry) == 0
            && (item = PyTuple_Pack(2, deadline_obj, key)) != NULL) {
            PyObject *push_args[2] = {self->deadlines, item};
            pushed = PyObject_Vectorcall(self->heappush, push_args, 2, NULL);
        }
    }
    Py_DECREF(packet_obj);
    Py_DECREF(out_amount_obj);
    Py_XDECREF(deadline_obj);
    Py_XDECREF(request_obj);
    Py_XDECREF(key);
    Py_XDECREF(entry);
    Py_XDECREF(item);
    if (pushed == NULL) goto done;
    Py_DECREF(pushed);
    uint64_t out_peer = PyLong_AsUnsignedLongLong(out_peer_obj);
    uint64_t received_ns = PyLong_AsUnsignedLongLong(args[A_RECEIVED]);
    if (PyErr_Occurred()) goto done;
    if (hand_over(self, out_io, out_io_obj, out_peer, request_out, received_ns, args[A_BODY]) < 0) goto done;
    result = Py_NewRef(Py_True);
    goto done;

not_here_or_error:
    if (PyErr_Occurred()) goto done;
not_here:
    result = Py_NewRef(Py_False);
done:
    Py_XDECREF(source);
    Py_XDECREF(fields);
    Py_XDECREF(out_peer_obj);
    Py_XDECREF(target);
    Py_XDECREF(out_io_obj);
    Py_XDECREF(reserved);
    return result;
}

/* fulfill(out_peer, request, body) -> bool */
static PyObject *
Forwarder_fulfill(ForwarderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "fulfill(out_peer, request, body)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[2], &view, PyBUF_SIMPLE) < 0) return NULL;
    int is_fulfill = view.len > 0 && ((const unsigned char *)view.buf)[0] == ILP_FULFILL;
    PyBuffer_Release(&view);
    uint64_t request = PyLong_AsUnsignedLongLong(args[1]);
    if (request == (uint64_t)-1 && PyErr_Occurred()) return NULL;
    Py_ssize_t owner = (Py_ssize_t)(request & self->owner_mask);
    if (!is_fulfill || owner >= PyList_GET_SIZE(self->tables)) Py_RETURN_FALSE;
    PyObject *table = PyList_GET_ITEM(self->tables, owner);  /* borrowed: the list never changes */
    PyObject *key = PyTuple_Pack(2, args[0], args[1]);
    PyObject *entry = NULL, *fulfillment = NULL, *hash = NULL, *digest = NULL, *condition = NULL;
    PyObject *values[F_COUNT] = {NULL}, *held = NULL, *result = NULL;
    if (key == NULL) return NULL;
    int rc = PyDict_Check(table) ? PyDict_GetItemRef(table, key, &entry) : 0;
    if (rc <= 0) goto not_here_or_error;
    fulfillment = PyObject_CallOneArg(self->fulfillment_of, args[2]);
    if (fulfillment == NULL) goto done;
    if (fulfillment == Py_None) goto not_here;
    if ((hash = PyObject_CallOneArg(self->sha256, fulfillment)) == NULL
        || (digest = PyObject_CallMethodNoArgs(hash, digest_name)) == NULL
        || (condition = PyObject_GetAttr(entry, fields[F_CONDITION])) == NULL)
        goto done;
    int matches = PyObject_RichCompareBool(digest, condition, Py_EQ);
    if (matches <= 0) goto not_here_or_error;  /* a wrong one: F05 is _on_reply's */
    PyObject *popped = NULL;
    rc = PyDict_Pop(table, key, &popped);
    Py_XDECREF(popped);
    if (rc <= 0) goto not_here_or_error;  /* answered meanwhile (expired, peer down) */
    for (int i = 0; i < F_COUNT; i++) {
        if ((values[i] = PyObject_GetAttr(entry, fields[i])) == NULL) goto done;
    }
    uint64_t in_peer = PyLong_AsUnsignedLongLong(values[F_IN_PEER]);
    uint64_t connection = PyLong_AsUnsignedLongLong(values[F_IN_CONNECTION]);
    uint64_t in_request = PyLong_AsUnsignedLongLong(values[F_IN_REQUEST]);
    uint64_t received_ns = PyLong_AsUnsignedLongLong(values[F_RECEIVED_NS]);
    if (PyErr_Occurred()) goto done;
    if (PyObject_GetBuffer(args[2], &view, PyBUF_SIMPLE) < 0) goto done;
    held = PyBytes_FromStringAndSize(NULL, EGRESS_HEADER + view.len);
    if (held != NULL) {
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(held);
        memset(out, 0, EGRESS_HEADER);
        out[0] = EGRESS_REPLY;
        put_le(out + 2, 2, in_peer);
        put_le(out + 4, 4, connection);
        put_le(out + 8, 4, in_request);
        put_le(out + 16, 8, received_ns);
        memcpy(out + EGRESS_HEADER, view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    if (held == NULL) goto done;
    PyObject *commit_args[3] = {values[F_PACKET_ID], values[F_IN_IO], held};
    PyObject *committed = PyObject_Vectorcall(self->commit, commit_args, 3, NULL);
    if (committed == NULL) goto done;
    int booked = committed == Py_True;
    Py_DECREF(committed);
    if (!booked) {  /* the books answer: a post the lane does not make, or R00 upstream */
        PyObject *generally_args[2] = {entry, held};
        PyObject *r = PyObject_Vectorcall(self->commit_generally, generally_args, 2, NULL);
        if (r == NULL) goto done;
        Py_DECREF(r);
    } else if (self->telemetry != Py_None) {
        PyObject *latency = PyLong_FromLongLong(clock_ns(CLOCK_MONOTONIC) - (long long)received_ns);
        if (latency == NULL) goto done;
        PyObject *event[7] = {values[F_IN_PEER], values[F_OUT_PEER], values[F_AMOUNT_IN], values[F_AMOUNT_OUT],
                              self->fulfilled, Py_None, latency};
        PyObject *r = PyObject_Vectorcall(self->telemetry, event, 7, NULL);
        Py_DECREF(latency);
        if (r == NULL) goto done;
        Py_DECREF(r);
    }
    result = Py_NewRef(Py_True);
    goto done;

not_here_or_error:
    if (PyErr_Occurred()) goto done;
not_here:
    result = Py_NewRef(Py_False);
done:
    Py_DECREF(key);
    Py_XDECREF(entry);
    Py_XDECREF(fulfillment);
    Py_XDECREF(hash);
    Py_XDECREF(digest);
    Py_XDECREF(condition);
    for (int i = 0; i < F_COUNT; i++) Py_XDECREF(values[i]);
    Py_XDECREF(held);
    return result;
}

#define MEMBERS(X) X(peers) X(resolve) X(peer_io) X(ids) X(reserve) X(read_prepare) X(write_prepare) \
    X(inflight) X(inflight_type) X(deadlines) X(heappush) X(puts) X(send) X(woken) X(ildcp) X(tables) \
    X(fulfillment_of) X(sha256) X(commit) X(commit_generally) X(telemetry) X(fulfilled)

static int
Forwarder_init(ForwarderObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"peers", "resolve", "peer_io", "ids", "reserve", "read_prepare", "write_prepare",
                               "inflight", "inflight_type", "deadlines", "heappush", "puts", "send", "woken",
                               "ildcp_destination", "min_window_ms", "max_hold_ms", "tables", "fulfillment_of",
                               "sha256", "commit", "commit_generally", "telemetry", "fulfilled", NULL};
    PyObject *peers, *resolve, *peer_io, *ids, *reserve, *read_prepare, *write_prepare, *inflight, *inflight_type,
             *deadlines, *heappush, *puts, *send, *woken, *ildcp, *tables, *fulfillment_of, *sha256, *commit,
             *commit_generally, *telemetry, *fulfilled;
    long long min_window_ms, max_hold_ms;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OO!O!OOOO!OO!OO!OO!U" "LL" "O!OOOOOO", keywords,
                                     &PyDict_Type, &peers, &resolve, &PyDict_Type, &peer_io, &IdSourceType, &ids,
                                     &reserve, &read_prepare, &write_prepare, &PyDict_Type, &inflight,
                                     &inflight_type, &PyList_Type, &deadlines, &heappush, &PyTuple_Type, &puts,
                                     &send, &PySet_Type, &woken, &ildcp, &min_window_ms, &max_hold_ms,
                                     &PyList_Type, &tables, &fulfillment_of, &sha256, &commit, &commit_generally,
                                     &telemetry, &fulfilled))
        return -1;
    self->owner_mask = (1ULL << ((IdSourceObject *)ids)->bits) - 1;
    if (min_window_ms < 0 || max_hold_ms < 0) {
        PyErr_SetString(PyExc_ValueError, "min_window_ms and max_hold_ms must be >= 0");
        return -1;
    }
    self->min_window_ms = min_window_ms;
    self->max_hold_ms = max_hold_ms;
#define SET(name) Py_XSETREF(self->name, Py_NewRef(name));
    MEMBERS(SET)
#undef SET
    return 0;
}

static int
Forwarder_traverse(ForwarderObject *self, visitproc visit, void *arg)
{
#define VISIT(name) Py_VISIT(self->name);
    MEMBERS(VISIT)
#undef VISIT
    return 0;
}

static int
Forwarder_clear(ForwarderObject *self)
{
#define CLEAR(name) Py_CLEAR(self->name);
    MEMBERS(CLEAR)
#undef CLEAR
    return 0;
}

static void
Forwarder_dealloc(ForwarderObject *self)
{
    PyObject_GC_UnTrack(self);
    Forwarder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL
static PyMethodDef Forwarder_methods[] = {
    {"prepare", FASTCALL(Forwarder_prepare),
     "prepare(io, peer, connection, request, received_ns, body) -> bool: the Prepare forwarded (reserved, "
     "rewritten in place, in flight, handed to the next hop's I/O thread), or False and nothing changed"},
    {"fulfill", FASTCALL(Forwarder_fulfill),
     "fulfill(out_peer, request, body) -> bool: a Fulfill that matches its Prepare's condition, taken out of "
     "flight and committed with its reply held until durable, or False and nothing changed"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ForwarderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "connector.packet._forward.Forwarder",
    .tp_doc = "One worker's common Prepare in one call (see the module doc).",
    .tp_basicsize = sizeof(ForwarderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Forwarder_init,
    .tp_traverse = (traverseproc)Forwarder_traverse,
    .tp_clear = (inquiry)Forwarder_clear,
    .tp_dealloc = (destructor)Forwarder_dealloc,
    .tp_methods = Forwarder_methods,
};

/* ------------------------------------------------------------------ module */

static int
forward_exec(PyObject *module)
{
    for (int i = 0; i < F_COUNT; i++) {
        if (fields[i] == NULL && (fields[i] = PyUnicode_InternFromString(FIELD_TEXT[i])) == NULL) return -1;
    }
    if (digest_name == NULL && (digest_name = PyUnicode_InternFromString("digest")) == NULL) return -1;
    if (PyType_Ready(&IdSourceType) < 0 || PyType_Ready(&ForwarderType) < 0) return -1;
    if (PyModule_AddObjectRef(module, "IdSource", (PyObject *)&IdSourceType) < 0) return -1;
    return PyModule_AddObjectRef(module, "Forwarder", (PyObject *)&ForwarderType);
}

static PyModuleDef_Slot forward_slots[] = {
    {Py_mod_exec, forward_exec},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef forward_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "connector.packet._forward",
    .m_doc = "The worker's common Prepare in C (see Worker._on_prepare, the reference).",
    .m_size = 0,
    .m_slots = forward_slots,
};

PyMODINIT_FUNC
PyInit__forward(void)
{
    return PyModuleDef_Init(&forward_module);
}
