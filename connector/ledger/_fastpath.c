/* The embedded ledger's packet fast path in C.
 *
 * `LedgerState` (state.py) keeps its accounts, transfers and timeout wheels in Python
 * containers guarded by striped locks.  The packet books call two operations per packet —
 * reserve both legs (`reserve_packet`), then post or void both (`resolve_packet`) — and
 * in Python each is a few hundred bytecodes of checks on 128-bit ints.  `PairEngine`
 * runs the common case of both in C on the same containers, under the same locks, with
 * the same rules; whenever anything is unusual (a retry, a limit crossed, a field that is
 * not plain, a value that does not fit its TigerBeetle width) it changes nothing and
 * answers "not here", and state.py takes its general path, which is the reference
 * (tests/ledger/test_ledger_fast_path.py compares the two on random sequences).
 *
 * What the containers hold is made here too, so that the packet path touches no int
 * objects for values: a transfer is a `Stored` record holding TigerBeetle's packed
 * 128-byte struct (the bytes the ledger ring and the database carry; the Python transfer
 * is made only if the general path or a lookup asks), and an account is a
 * `StoredAccount` with its fields as C integers (Python sees `model.Account`'s
 * attributes).
 *
 * Thread safety (free-threaded CPython): the containers are only read with the
 * lock-free dict look-ups (`PyDict_GetItemRef`, `PyDict_Contains`) and written with
 * `PyDict_SetItem`, which takes the dict's own critical section; accounts and stored
 * transfers are only changed while the stripe locks of their ids are held, exactly as
 * in state.py.  A `Stored` record's state is read and written with relaxed atomics,
 * because a resolving thread peeks at it before taking the locks (and checks it again
 * under them); its packed struct never changes once it is in a dict.
 *
 * Also here: `pack_transfer` / `pack_transfers`, TigerBeetle's 128-byte transfer struct
 * from any object with a transfer's attributes; and the batch writer's `gather_records`,
 * which takes a run of the common records (the packet books': transfers, maybe a held
 * reply) out of a `Ring.read_many` copy of ledger ring slots in one call
 * (embedded.py's `_parse_record` is its reference).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef unsigned __int128 u128;

#define U128_MAX (~(u128)0)
#define NS_PER_S 1000000000ULL
#define EXPIRY_ID_BIT ((u128)1 << 127)

/* Transfer flags, account flags and pending states as in state.py. */
enum { LINKED = 1, PENDING = 1 << 1, POST = 1 << 2, VOID = 1 << 3 };
enum { DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1, CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2 };
enum { OPEN = 1, POSTED = 2, VOIDED = 3 };

/* The packet books' transfer ids (books.py's packet_transfer_id). */
#define PACKET_TAG 1
#define EPOCH_MASK (((u128)1 << 48) - 1)
enum { LEG_IN = 0, LEG_OUT = 1 };
enum { PHASE_PENDING = 1, PHASE_POST = 2, PHASE_VOID = 3 };

/* A pair touches two transfer ids and four accounts: at most six stripes. */
#define MAX_HELD 6

/* ------------------------------------------------------------------ interned names */

enum {
    N_ID, N_DEBIT, N_CREDIT, N_AMOUNT, N_PENDING_ID, N_UD128, N_UD64, N_UD32, N_TIMEOUT,
    N_LEDGER, N_CODE, N_FLAGS, N_TIMESTAMP,  /* the 13 transfer fields, in order */
    N_DEBITS_PENDING, N_DEBITS_POSTED, N_CREDITS_PENDING, N_CREDITS_POSTED,
    N_ACQUIRE, N_RELEASE, N_COUNT
};
#define TRANSFER_FIELDS 13
static const char *const NAME_TEXT[N_COUNT] = {
    "id", "debit_account_id", "credit_account_id", "amount", "pending_id", "user_data_128",
    "user_data_64", "user_data_32", "timeout", "ledger", "code", "flags", "timestamp",
    "debits_pending", "debits_posted", "credits_pending", "credits_posted",
    "acquire", "release",
};
static PyObject *names[N_COUNT];

/* ------------------------------------------------------------------ ints */

/* 0 and the value when `v` is an int in [0, 2**128); 1 when it is not (no error set). */
static int
as_u128(PyObject *v, u128 *out)
{
    if (!PyLong_Check(v)) return 1;
    unsigned char buf[16];
    Py_ssize_t need = PyLong_AsNativeBytes(v, buf, 16, Py_ASNATIVEBYTES_LITTLE_ENDIAN
                                           | Py_ASNATIVEBYTES_UNSIGNED_BUFFER
                                           | Py_ASNATIVEBYTES_REJECT_NEGATIVE);
    if (need < 0) {
        PyErr_Clear();
        return 1;
    }
    if (need > 16) return 1;
    uint64_t lo, hi;
    memcpy(&lo, buf, 8);
    memcpy(&hi, buf + 8, 8);
    *out = (u128)hi << 64 | lo;
    return 0;
}

static PyObject *
from_u128(u128 v)
{
    if (v >> 64 == 0) return PyLong_FromUnsignedLongLong((unsigned long long)v);
    unsigned char buf[16];
    uint64_t lo = (uint64_t)v, hi = (uint64_t)(v >> 64);
    memcpy(buf, &lo, 8);
    memcpy(buf + 8, &hi, 8);
    return PyLong_FromUnsignedNativeBytes(buf, 16, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
}

/* Read attribute `name` of `obj` as a u128: 0 done, 1 not a plain value, -1 error. */
static int
attr_u128(PyObject *obj, int name, u128 *out)
{
    PyObject *v = PyObject_GetAttr(obj, names[name]);
    if (v == NULL) return -1;
    int rc = as_u128(v, out);
    Py_DECREF(v);
    return rc;
}

static int
set_attr_u128(PyObject *obj, int name, u128 value)
{
    PyObject *v = from_u128(value);
    if (v == NULL) return -1;
    int rc = PyObject_SetAttr(obj, names[name], v);
    Py_DECREF(v);
    return rc;
}

/* `a + b + c > U128_MAX`, without overflowing. */
static inline int
sum_exceeds(u128 a, u128 b, u128 c)
{
    u128 s;
    if (__builtin_add_overflow(a, b, &s)) return 1;
    return __builtin_add_overflow(s, c, &s);
}

static inline uint64_t
stripe_of(u128 id, uint64_t mask)
{
    return (uint64_t)(id ^ id >> 12) & mask;
}

/* ------------------------------------------------------------------ packed transfers */

/* Field offsets in TigerBeetle's tb_transfer_t: six u128 (id, debit, credit, amount,
 * pending_id, user_data_128), user_data_64 u64, user_data_32 u32, timeout u32, ledger
 * u32, code u16, flags u16, timestamp u64; little-endian, 128 bytes. */
enum {
    P_ID = 0, P_DEBIT = 16, P_CREDIT = 32, P_AMOUNT = 48, P_PENDING_ID = 64, P_UD128 = 80,
    P_UD64 = 96, P_UD32 = 104, P_TIMEOUT = 108, P_LEDGER = 112, P_CODE = 116, P_FLAGS = 118,
    P_TIMESTAMP = 120, RECORD_BYTES = 128
};

static inline u128
get_u128(const unsigned char *p, int offset)
{
    uint64_t lo, hi;
    memcpy(&lo, p + offset, 8);
    memcpy(&hi, p + offset + 8, 8);
    return (u128)hi << 64 | lo;
}

static inline void
put_u128(unsigned char *p, int offset, u128 v)
{
    uint64_t lo = (uint64_t)v, hi = (uint64_t)(v >> 64);
    memcpy(p + offset, &lo, 8);
    memcpy(p + offset + 8, &hi, 8);
}

/* An unsigned field of `size` bytes (little-endian host). */
static inline uint64_t
get_uint(const unsigned char *p, int offset, int size)
{
    uint64_t v = 0;
    memcpy(&v, p + offset, (size_t)size);
    return v;
}

static inline void
put_uint(unsigned char *p, int offset, int size, uint64_t v)
{
    memcpy(p + offset, &v, (size_t)size);
}

/* The transfer class and its slot offsets, for transfers made from packed records (set
 * by the first PairEngine; every engine passes the same class). */
static PyTypeObject *transfer_type;
static Py_ssize_t transfer_slots[TRANSFER_FIELDS];
static PyMutex transfer_type_mutex;

/* The 13 field values of a packed transfer, as ints (new references; NULL on error). */
static int
unpack_values(const unsigned char *p, PyObject *values[TRANSFER_FIELDS])
{
    static const struct { int name; int offset; int size; } fields[TRANSFER_FIELDS] = {
        {N_ID, P_ID, 16}, {N_DEBIT, P_DEBIT, 16}, {N_CREDIT, P_CREDIT, 16}, {N_AMOUNT, P_AMOUNT, 16},
        {N_PENDING_ID, P_PENDING_ID, 16}, {N_UD128, P_UD128, 16}, {N_UD64, P_UD64, 8}, {N_UD32, P_UD32, 4},
        {N_TIMEOUT, P_TIMEOUT, 4}, {N_LEDGER, P_LEDGER, 4}, {N_CODE, P_CODE, 2}, {N_FLAGS, P_FLAGS, 2},
        {N_TIMESTAMP, P_TIMESTAMP, 8},
    };
    int ok = 1;
    for (int i = 0; i < TRANSFER_FIELDS; i++) {
        int at = fields[i].offset;
        values[fields[i].name] = !ok ? NULL
            : fields[i].size == 16 ? from_u128(get_u128(p, at))
            : PyLong_FromUnsignedLongLong(get_uint(p, at, fields[i].size));
        ok = values[fields[i].name] != NULL;
    }
    if (!ok) {
        for (int i = 0; i < TRANSFER_FIELDS; i++) Py_CLEAR(values[i]);
        return -1;
    }
    return 0;
}

/* A new transfer object with these 13 field values (references stolen), built by
 * filling its slots: nothing else can see it yet. */
static PyObject *
new_transfer(PyObject *values[TRANSFER_FIELDS])
{
    PyObject *t = transfer_type->tp_alloc(transfer_type, 0);
    if (t == NULL) {
        for (int i = 0; i < TRANSFER_FIELDS; i++) Py_DECREF(values[i]);
        return NULL;
    }
    for (int i = 0; i < TRANSFER_FIELDS; i++) {
        *(PyObject **)((char *)t + transfer_slots[i]) = values[i];
    }
    /* Its fields are ints: it can be in no reference cycle, so the collector need not
     * scan it (each collection stops every thread in 3.13t). */
    if (PyObject_IS_GC(t)) PyObject_GC_UnTrack(t);
    return t;
}

static PyObject *
transfer_from_packed(const unsigned char *p)
{
    PyObject *values[TRANSFER_FIELDS];
    if (unpack_values(p, values) < 0) return NULL;
    return new_transfer(values);
}

static int pack_into(PyObject *t, unsigned char *out);

/* ------------------------------------------------------------------ Stored */

/* A transfer as the state machine stores it.  The packet path makes and reads it as
 * TigerBeetle's packed struct only (no Python transfer, no 128-bit ints); the Python
 * transfer is made the first time the general path or a lookup asks for it.  A pending
 * leg made here also keeps its two accounts, so resolving it looks nothing up. */
typedef struct {
    PyObject_HEAD
    PyObject *transfer;  /* NULL until asked for when made in C; set once (atomically) */
    PyObject *debit_account, *credit_account;  /* a pending leg made here; else NULL */
    int state;
    int packed_ok;  /* `packed` holds the transfer (always, for records made in C) */
    uint64_t expires_at;
    unsigned char packed[RECORD_BYTES];
} StoredObject;

static PyTypeObject StoredType;

static StoredObject *
stored_alloc(int state, uint64_t expires_at)
{
    StoredObject *self = PyObject_New(StoredObject, &StoredType);
    if (self == NULL) return NULL;
    self->transfer = self->debit_account = self->credit_account = NULL;
    self->state = state;
    self->packed_ok = 0;
    self->expires_at = expires_at;
    return self;
}

/* A record made in C: the packed transfer (copied), and for a pending leg its accounts. */
static PyObject *
stored_packed(const unsigned char *packed, int state, uint64_t expires_at, PyObject *debit_account,
              PyObject *credit_account)
{
    StoredObject *self = stored_alloc(state, expires_at);
    if (self == NULL) return NULL;
    memcpy(self->packed, packed, RECORD_BYTES);
    self->packed_ok = 1;
    self->debit_account = Py_XNewRef(debit_account);
    self->credit_account = Py_XNewRef(credit_account);
    return (PyObject *)self;
}

/* A record of a Python transfer (the general path, or create_pending_pair): packed too
 * when every field fits its TigerBeetle width, so the packet path can resolve it. */
static PyObject *
stored_of_transfer(PyObject *transfer, int state, uint64_t expires_at)
{
    StoredObject *self = stored_alloc(state, expires_at);
    if (self == NULL) return NULL;
    self->transfer = Py_NewRef(transfer);
    if (pack_into(transfer, self->packed) == 0) {
        self->packed_ok = 1;
    } else if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
        PyErr_Clear();
    } else {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *
Stored_new(PyTypeObject *Py_UNUSED(type), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"transfer", "state", "expires_at", NULL};
    PyObject *transfer;
    int state;
    unsigned long long expires_at;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiK", keywords, &transfer, &state, &expires_at))
        return NULL;
    return stored_of_transfer(transfer, state, expires_at);
}

static void
Stored_dealloc(StoredObject *self)
{
    Py_XDECREF(self->transfer);
    Py_XDECREF(self->debit_account);
    Py_XDECREF(self->credit_account);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Stored_get_transfer(StoredObject *self, void *Py_UNUSED(closure))
{
    PyObject *known = __atomic_load_n(&self->transfer, __ATOMIC_ACQUIRE);
    if (known != NULL) return Py_NewRef(known);
    PyObject *made = transfer_from_packed(self->packed);  /* (packed_ok: no transfer means made in C) */
    if (made == NULL) return NULL;
    PyObject *expected = NULL;
    if (!__atomic_compare_exchange_n(&self->transfer, &expected, made, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        Py_DECREF(made);  /* another thread made it first: one object for everyone */
        return Py_NewRef(expected);
    }
    return Py_NewRef(made);
}

static PyObject *
Stored_get_state(StoredObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(__atomic_load_n(&self->state, __ATOMIC_RELAXED));
}

static int
Stored_set_state(StoredObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "state cannot be deleted");
        return -1;
    }
    int state = PyLong_AsInt(value);
    if (state == -1 && PyErr_Occurred()) return -1;
    __atomic_store_n(&self->state, state, __ATOMIC_RELAXED);
    return 0;
}

static PyObject *
Stored_get_expires_at(StoredObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->expires_at);
}

static PyObject *
Stored_get_packed(StoredObject *self, void *Py_UNUSED(closure))
{
    if (!self->packed_ok) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)self->packed, RECORD_BYTES);
}

static PyGetSetDef Stored_getset[] = {
    {"transfer", (getter)Stored_get_transfer, NULL, "the transfer as stored", NULL},
    {"state", (getter)Stored_get_state, (setter)Stored_set_state, "OPEN, POSTED, VOIDED, EXPIRED, or 0", NULL},
    {"expires_at", (getter)Stored_get_expires_at, NULL, "ns since the epoch; 0 never", NULL},
    {"packed", (getter)Stored_get_packed, NULL,
     "TigerBeetle's 128-byte struct of the transfer, or None when a field does not fit it", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject StoredType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "connector.ledger._fastpath.Stored",
    .tp_doc = "Stored(transfer, state, expires_at): a created transfer, and what a pending one needs to resolve once.",
    .tp_basicsize = sizeof(StoredObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Stored_new,
    .tp_dealloc = (destructor)Stored_dealloc,
    .tp_getset = Stored_getset,
};

/* ------------------------------------------------------------------ transfers */

/* A transfer's fields as u128s. */
typedef struct {
    u128 id, debit, credit, amount, pending_id, timeout, ledger, code, flags, timestamp;
} TransferView;

/* 0 read, 1 not plain (some field is not an int in range), -1 error. */
static int
read_transfer(PyObject *t, TransferView *v)
{
    static const int wanted[] = {N_ID, N_DEBIT, N_CREDIT, N_AMOUNT, N_PENDING_ID, N_TIMEOUT,
                                 N_LEDGER, N_CODE, N_FLAGS, N_TIMESTAMP};
    u128 *slots[] = {&v->id, &v->debit, &v->credit, &v->amount, &v->pending_id, &v->timeout,
                     &v->ledger, &v->code, &v->flags, &v->timestamp};
    for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
        int rc = attr_u128(t, wanted[i], slots[i]);
        if (rc != 0) return rc;
    }
    return 0;
}

/* state.py's `_plain_pending`. */
static int
plain_pending(const TransferView *t, u128 flags)
{
    return t->flags == flags && t->timestamp == 0 && t->pending_id == 0 && t->code != 0 && t->ledger != 0
        && t->id != 0 && t->id != U128_MAX && t->debit != 0 && t->debit != U128_MAX
        && t->credit != 0 && t->credit != U128_MAX;
}

/* ------------------------------------------------------------------ accounts */

/* An account as the state machine keeps it: TigerBeetle's fields as C integers, so the
 * packet path reads and moves balances without making an int object per value.  Python
 * sees the attributes of `model.Account` (the general path uses them as it always did);
 * a value that does not fit its TigerBeetle width is refused when set. */
enum {
    A_ID, A_DEBITS_PENDING, A_DEBITS_POSTED, A_CREDITS_PENDING, A_CREDITS_POSTED, A_UD128, A_UD64, A_UD32,
    A_LEDGER, A_CODE, A_FLAGS, A_TIMESTAMP, ACCOUNT_FIELDS
};
static char *ACCOUNT_FIELD_NAMES[ACCOUNT_FIELDS + 1] = {
    "id", "debits_pending", "debits_posted", "credits_pending", "credits_posted", "user_data_128",
    "user_data_64", "user_data_32", "ledger", "code", "flags", "timestamp", NULL,
};
static const int ACCOUNT_FIELD_BITS[ACCOUNT_FIELDS] = {128, 128, 128, 128, 128, 128, 64, 32, 32, 16, 16, 64};

typedef struct {
    PyObject_HEAD
    u128 f[ACCOUNT_FIELDS];  /* changed only under the stripe lock of the account's id */
} StoredAccountObject;

static PyTypeObject StoredAccountType;

static int
account_field_set(StoredAccountObject *self, int field, PyObject *value)
{
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "%s cannot be deleted", ACCOUNT_FIELD_NAMES[field]);
        return -1;
    }
    u128 v;
    int bits = ACCOUNT_FIELD_BITS[field];
    if (as_u128(value, &v) != 0 || (bits < 128 && v >> bits)) {
        PyErr_Format(PyExc_OverflowError, "account field %s must be an int in [0, 2**%d)",
                     ACCOUNT_FIELD_NAMES[field], bits);
        return -1;
    }
    self->f[field] = v;
    return 0;
}

static PyObject *
StoredAccount_get(StoredAccountObject *self, void *closure)
{
    return from_u128(self->f[(intptr_t)closure]);
}

static int
StoredAccount_set(StoredAccountObject *self, PyObject *value, void *closure)
{
    return account_field_set(self, (int)(intptr_t)closure, value);
}

static PyObject *
StoredAccount_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *values[ACCOUNT_FIELDS] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OOOOOOOOOOOO", ACCOUNT_FIELD_NAMES, &values[0], &values[1],
                                     &values[2], &values[3], &values[4], &values[5], &values[6], &values[7],
                                     &values[8], &values[9], &values[10], &values[11]))
        return NULL;
    StoredAccountObject *self = (StoredAccountObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    for (int i = 0; i < ACCOUNT_FIELDS; i++) {
        self->f[i] = 0;
        if (values[i] != NULL && account_field_set(self, i, values[i]) < 0) {
            Py_DECREF(self);
            return NULL;
        }
    }
    return (PyObject *)self;
}

static PyObject *
StoredAccount_repr(StoredAccountObject *self)
{
    PyObject *id = from_u128(self->f[A_ID]), *ledger = from_u128(self->f[A_LEDGER]);
    PyObject *repr = id && ledger ? PyUnicode_FromFormat("StoredAccount(id=%R, ledger=%R)", id, ledger) : NULL;
    Py_XDECREF(id);
    Py_XDECREF(ledger);
    return repr;
}

static PyGetSetDef StoredAccount_getset[ACCOUNT_FIELDS + 1];

static PyTypeObject StoredAccountType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "connector.ledger._fastpath.StoredAccount",
    .tp_doc = "StoredAccount(id, debits_pending, ..., timestamp): an account as the state machine keeps it "
              "(model.Account's fields, as C integers).",
    .tp_basicsize = sizeof(StoredAccountObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = StoredAccount_new,
    .tp_repr = (reprfunc)StoredAccount_repr,
    .tp_getset = StoredAccount_getset,
};

/* Fill the getset table from the field names (before PyType_Ready). */
static void
stored_account_prepare(void)
{
    for (int i = 0; i < ACCOUNT_FIELDS; i++) {
        StoredAccount_getset[i] = (PyGetSetDef){ACCOUNT_FIELD_NAMES[i], (getter)StoredAccount_get,
                                                (setter)StoredAccount_set, NULL, (void *)(intptr_t)i};
    }
    StoredAccount_getset[ACCOUNT_FIELDS] = (PyGetSetDef){NULL, NULL, NULL, NULL, NULL};
}

/* An account's balances, limits' inputs and where to write them back. */
typedef struct {
    PyObject *obj;
    StoredAccountObject *cell;  /* obj, when it is a StoredAccount; else NULL (attributes) */
    u128 debits_pending, debits_posted, credits_pending, credits_posted, ledger, flags;
} AccountView;

static int
read_account(PyObject *a, AccountView *v)
{
    v->obj = a;
    if (Py_IS_TYPE(a, &StoredAccountType)) {
        StoredAccountObject *cell = v->cell = (StoredAccountObject *)a;
        v->debits_pending = cell->f[A_DEBITS_PENDING];
        v->debits_posted = cell->f[A_DEBITS_POSTED];
        v->credits_pending = cell->f[A_CREDITS_PENDING];
        v->credits_posted = cell->f[A_CREDITS_POSTED];
        v->ledger = cell->f[A_LEDGER];
        v->flags = cell->f[A_FLAGS];
        return 0;
    }
    static const int wanted[] = {N_DEBITS_PENDING, N_DEBITS_POSTED, N_CREDITS_PENDING, N_CREDITS_POSTED,
                                 N_LEDGER, N_FLAGS};
    u128 *slots[] = {&v->debits_pending, &v->debits_posted, &v->credits_pending, &v->credits_posted,
                     &v->ledger, &v->flags};
    v->cell = NULL;
    for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
        int rc = attr_u128(a, wanted[i], slots[i]);
        if (rc != 0) return rc;
    }
    return 0;
}

/* Write one balance back (`name`: N_DEBITS_PENDING ... N_CREDITS_POSTED, in the order of
 * A_DEBITS_PENDING ... A_CREDITS_POSTED). */
static int
write_balance(const AccountView *v, int name, u128 value)
{
    if (v->cell == NULL) return set_attr_u128(v->obj, name, value);
    v->cell->f[A_DEBITS_PENDING + (name - N_DEBITS_PENDING)] = value;
    return 0;
}

/* state.py's `_pending_fits`: same ledger, no overflow, neither balance flag crossed. */
static int
pending_fits(const TransferView *t, const AccountView *dr, const AccountView *cr)
{
    u128 amount = t->amount, s;
    if (dr->ledger != t->ledger || cr->ledger != t->ledger) return 0;
    if (__builtin_add_overflow(dr->debits_pending, amount, &s)) return 0;
    if (__builtin_add_overflow(cr->credits_pending, amount, &s)) return 0;
    if (__builtin_add_overflow(dr->debits_posted, amount, &s)) return 0;
    if (__builtin_add_overflow(cr->credits_posted, amount, &s)) return 0;
    if (sum_exceeds(dr->debits_pending, dr->debits_posted, amount)) return 0;
    if (sum_exceeds(cr->credits_pending, cr->credits_posted, amount)) return 0;
    /* No overflow past here: the sums fit. */
    if (dr->flags & DEBITS_MUST_NOT_EXCEED_CREDITS
            && dr->debits_pending + dr->debits_posted + amount > dr->credits_posted) return 0;
    if (cr->flags & CREDITS_MUST_NOT_EXCEED_DEBITS
            && cr->credits_pending + cr->credits_posted + amount > cr->debits_posted) return 0;
    return 1;
}

/* ------------------------------------------------------------------ PairEngine */

/* Resolved ids, oldest first: a ring of references that grows as needed. */
typedef struct {
    PyMutex mutex;
    PyObject **items;
    Py_ssize_t capacity, head, count, limit;
} Recent;

typedef struct {
    PyObject_HEAD
    Recent recent;
    PyObject *acquire;   /* tuple: each stripe lock's bound `acquire` */
    PyObject *release;   /* tuple: each stripe lock's bound `release` */
    PyObject *accounts;  /* dict: account id -> Account */
    PyObject *shards;    /* tuple of dicts: transfer id -> Stored, one per stripe */
    PyObject *failed;    /* dict: transiently failed transfer id -> status */
    PyObject *wheels;    /* tuple of dicts: expiry second -> set of pending ids, per stripe */
    uint64_t mask;
} EngineObject;

typedef struct {
    uint64_t stripes[MAX_HELD];
    int count;
} HeldSet;

static void
held_add(HeldSet *h, uint64_t stripe)
{
    for (int i = 0; i < h->count; i++) {
        if (h->stripes[i] == stripe) return;
    }
    int i = h->count++;
    while (i > 0 && h->stripes[i - 1] > stripe) {  /* keep ascending: one lock order */
        h->stripes[i] = h->stripes[i - 1];
        i--;
    }
    h->stripes[i] = stripe;
}

static int
call_lock(EngineObject *self, uint64_t stripe, int name)
{
    PyObject *methods = name == N_ACQUIRE ? self->acquire : self->release;
    PyObject *r = PyObject_CallNoArgs(PyTuple_GET_ITEM(methods, (Py_ssize_t)stripe));
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

static int
hold(EngineObject *self, const HeldSet *h)
{
    for (int i = 0; i < h->count; i++) {
        if (call_lock(self, h->stripes[i], N_ACQUIRE) < 0) {
            while (--i >= 0) {
                PyObject *exc = PyErr_GetRaisedException();
                call_lock(self, h->stripes[i], N_RELEASE);
                PyErr_SetRaisedException(exc);
            }
            return -1;
        }
    }
    return 0;
}

static int
let_go(EngineObject *self, const HeldSet *h)
{
    int rc = 0;
    for (int i = h->count - 1; i >= 0; i--) {
        PyObject *exc = PyErr_GetRaisedException();
        if (call_lock(self, h->stripes[i], N_RELEASE) < 0) rc = -1;
        if (exc != NULL) {  /* the first error wins */
            if (rc < 0) PyErr_Clear();
            PyErr_SetRaisedException(exc);
            rc = -1;
        }
    }
    return rc;
}

static PyObject *
shard(EngineObject *self, u128 id)
{
    return PyTuple_GET_ITEM(self->shards, (Py_ssize_t)stripe_of(id, self->mask));
}

/* The timeout wheel of a pending transfer (its debit account's stripe's) and the key of
 * its expiry second (a new reference, NULL on error). */
static PyObject *
wheel_slot(EngineObject *self, u128 debit_account_id, uint64_t expires_at, PyObject **wheel)
{
    *wheel = PyTuple_GET_ITEM(self->wheels, (Py_ssize_t)stripe_of(debit_account_id, self->mask));
    return PyLong_FromUnsignedLongLong(expires_at / NS_PER_S);
}

static int
wheel_add(EngineObject *self, u128 debit_account_id, uint64_t expires_at, PyObject *pending_id)
{
    PyObject *wheel, *second = wheel_slot(self, debit_account_id, expires_at, &wheel), *bucket;
    if (second == NULL) return -1;
    int rc = PyDict_GetItemRef(wheel, second, &bucket);
    if (rc == 0) {
        bucket = PySet_New(NULL);
        if (bucket == NULL || PyDict_SetItem(wheel, second, bucket) < 0) rc = -1;
    }
    Py_DECREF(second);
    if (rc < 0) {
        Py_XDECREF(bucket);
        return -1;
    }
    rc = PySet_Add(bucket, pending_id);
    Py_DECREF(bucket);
    return rc;
}

static int
wheel_remove(EngineObject *self, u128 debit_account_id, uint64_t expires_at, PyObject *pending_id)
{
    PyObject *wheel, *second = wheel_slot(self, debit_account_id, expires_at, &wheel), *bucket;
    if (second == NULL) return -1;
    int rc = PyDict_GetItemRef(wheel, second, &bucket);
    if (rc > 0) {
        rc = PySet_Discard(bucket, pending_id);
        if (rc >= 0 && PySet_GET_SIZE(bucket) == 0) rc = PyDict_DelItem(wheel, second);
        Py_DECREF(bucket);
    }
    Py_DECREF(second);
    return rc < 0 ? -1 : 0;
}

/* Any of these ids already stored or burned?  1 yes, 0 no, -1 error. */
static int
ids_taken(EngineObject *self, PyObject *first_table, PyObject *first, PyObject *second_table, PyObject *second)
{
    int rc;
    if ((rc = PyDict_Contains(first_table, first)) != 0) return rc;
    if ((rc = PyDict_Contains(second_table, second)) != 0) return rc;
    if ((rc = PyDict_Contains(self->failed, first)) != 0) return rc;
    return PyDict_Contains(self->failed, second);
}

/* Look up four accounts (new references; all NULL when one is missing).  1 found,
 * 0 missing, -1 error. */
static int
find_accounts(EngineObject *self, PyObject *const ids[4], PyObject *found[4])
{
    for (int i = 0; i < 4; i++) {
        int rc = PyDict_GetItemRef(self->accounts, ids[i], &found[i]);
        if (rc <= 0) {
            for (int j = 0; j < i; j++) Py_CLEAR(found[j]);
            return rc;
        }
    }
    return 1;
}

static void
drop_accounts(PyObject *found[4])
{
    for (int i = 0; i < 4; i++) Py_CLEAR(found[i]);
}

/* ---- create_pending_pair */

/* Two pending legs on their way in: as read, as they will be stored, and the objects
 * the dicts are keyed by (new references). */
typedef struct {
    TransferView t[2];
    unsigned char packed[2][RECORD_BYTES];  /* timestamps filled in when applied */
    PyObject *given[2];        /* the Python transfers passed to create_pending_pair; else NULL */
    PyObject *ids[2];
    PyObject *account_ids[4];  /* debit and credit of each leg */
} PendingPair;

static void
pair_clear(PendingPair *pair)
{
    for (int i = 0; i < 2; i++) {
        Py_CLEAR(pair->given[i]);
        Py_CLEAR(pair->ids[i]);
    }
    for (int i = 0; i < 4; i++) Py_CLEAR(pair->account_ids[i]);
}

/* Under the locks: apply both pending transfers, or nothing.  1 applied, 0 not, -1 error
 * (after a partial change only if the interpreter ran out of memory). */
static int
apply_pending_pair(EngineObject *self, PendingPair *pair, PyObject *now_obj, uint64_t now)
{
    TransferView *t = pair->t;
    PyObject *accounts[4] = {NULL, NULL, NULL, NULL};
    PyObject *tables[2] = {shard(self, t[0].id), shard(self, t[1].id)};
    int rc = ids_taken(self, tables[0], pair->ids[0], tables[1], pair->ids[1]);
    if (rc != 0) return rc < 0 ? -1 : 0;
    rc = find_accounts(self, pair->account_ids, accounts);
    if (rc <= 0) return rc;
    int result = -1;
    AccountView views[4];
    for (int i = 0; i < 4; i++) {
        rc = read_account(accounts[i], &views[i]);
        if (rc != 0) {
            result = rc < 0 ? -1 : 0;
            goto done;
        }
    }
    uint64_t expires[2];
    for (int i = 0; i < 2; i++) {
        if (!pending_fits(&t[i], &views[2 * i], &views[2 * i + 1])) {
            result = 0;
            goto done;
        }
        if (t[i].timeout > UINT64_MAX) {  /* (so the product below cannot overflow) */
            result = 0;
            goto done;
        }
        u128 at = t[i].timeout ? (u128)now + t[i].timeout * NS_PER_S : 0;
        if (at > UINT64_MAX) {
            result = 0;
            goto done;
        }
        expires[i] = (uint64_t)at;
    }
    for (int i = 0; i < 2; i++) {
        AccountView *dr = &views[2 * i], *cr = &views[2 * i + 1];
        put_uint(pair->packed[i], P_TIMESTAMP, 8, now);
        if (pair->given[i] != NULL && PyObject_SetAttr(pair->given[i], names[N_TIMESTAMP], now_obj) < 0) goto done;
        if (write_balance(dr, N_DEBITS_PENDING, dr->debits_pending + t[i].amount) < 0) goto done;
        if (write_balance(cr, N_CREDITS_PENDING, cr->credits_pending + t[i].amount) < 0) goto done;
        PyObject *record = stored_packed(pair->packed[i], OPEN, expires[i], dr->obj, cr->obj);
        if (record == NULL) goto done;
        ((StoredObject *)record)->transfer = Py_XNewRef(pair->given[i]);
        rc = PyDict_SetItem(tables[i], pair->ids[i], record);
        Py_DECREF(record);
        if (rc < 0) goto done;
        if (expires[i] && wheel_add(self, t[i].debit, expires[i], pair->ids[i]) < 0) goto done;
    }
    result = 1;
done:
    drop_accounts(accounts);
    return result;
}

/* The plain checks, the locks, and the pair applied: 1, or 0 and nothing changed, or -1. */
static int
try_pending_pair(EngineObject *self, PendingPair *pair, PyObject *now_obj, uint64_t now)
{
    TransferView *t = pair->t;
    if (!plain_pending(&t[0], LINKED | PENDING) || !plain_pending(&t[1], PENDING) || t[0].id == t[1].id)
        return 0;
    u128 accounts[4] = {t[0].debit, t[0].credit, t[1].debit, t[1].credit};
    for (int i = 0; i < 4; i++) {
        for (int j = i + 1; j < 4; j++) {
            if (accounts[i] == accounts[j]) return 0;
        }
    }
    HeldSet held = {.count = 0};
    held_add(&held, stripe_of(t[0].id, self->mask));
    held_add(&held, stripe_of(t[1].id, self->mask));
    for (int i = 0; i < 4; i++) held_add(&held, stripe_of(accounts[i], self->mask));
    if (hold(self, &held) < 0) return -1;
    int applied = apply_pending_pair(self, pair, now_obj, now);
    if (let_go(self, &held) < 0) return -1;
    return applied;
}

static int
now_of(PyObject *now_obj, uint64_t *now)
{
    u128 now128;
    if (as_u128(now_obj, &now128) != 0 || now128 > UINT64_MAX) {
        PyErr_SetString(PyExc_ValueError, "now must be an int in [0, 2**64)");
        return -1;
    }
    *now = (uint64_t)now128;
    return 0;
}

static PyObject *
Engine_create_pending_pair(EngineObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "create_pending_pair(first, second, now)");
        return NULL;
    }
    uint64_t now;
    if (now_of(args[2], &now) < 0) return NULL;
    PendingPair pair;
    memset(&pair, 0, sizeof(pair));
    PyObject *result = NULL;
    int plain = 1;
    for (int i = 0; i < 2 && plain; i++) {
        int rc = read_transfer(args[i], &pair.t[i]);
        if (rc < 0) goto done;
        if (rc == 0 && pack_into(args[i], pair.packed[i]) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) goto done;
            PyErr_Clear();
            rc = 1;  /* a field wider than TigerBeetle's: the general path says what it makes of it */
        }
        plain = rc == 0;
        if (!plain) break;
        pair.given[i] = Py_NewRef(args[i]);
        if ((pair.ids[i] = PyObject_GetAttr(args[i], names[N_ID])) == NULL) goto done;
        if ((pair.account_ids[2 * i] = PyObject_GetAttr(args[i], names[N_DEBIT])) == NULL) goto done;
        if ((pair.account_ids[2 * i + 1] = PyObject_GetAttr(args[i], names[N_CREDIT])) == NULL) goto done;
    }
    int applied = plain ? try_pending_pair(self, &pair, args[2], now) : 0;
    if (applied >= 0) result = PyBool_FromLong(applied);
done:
    pair_clear(&pair);
    return result;
}

/* ---- resolve_pair */

typedef struct {
    StoredObject *record;
    PyObject *accounts[2];  /* debit and credit (new references), once found */
    AccountView dr, cr;
    u128 amount, debit, credit;
} Resolving;

/* 0 read, 1 not a pending transfer the packet path can resolve. */
static int
read_resolving(StoredObject *record, Resolving *r)
{
    r->record = record;
    if (!record->packed_ok || !(get_uint(record->packed, P_FLAGS, 2) & PENDING)) return 1;
    r->amount = get_u128(record->packed, P_AMOUNT);
    r->debit = get_u128(record->packed, P_DEBIT);
    r->credit = get_u128(record->packed, P_CREDIT);
    return 0;
}

/* The accounts of a pending leg: kept by its record when it was made here, else looked
 * up.  1 found, 0 missing, -1 error. */
static int
resolving_accounts(EngineObject *self, Resolving *r)
{
    StoredObject *record = r->record;
    if (record->debit_account != NULL && record->credit_account != NULL) {
        r->accounts[0] = Py_NewRef(record->debit_account);
        r->accounts[1] = Py_NewRef(record->credit_account);
        return 1;
    }
    u128 ids[2] = {r->debit, r->credit};
    for (int i = 0; i < 2; i++) {
        PyObject *key = from_u128(ids[i]);
        if (key == NULL) return -1;
        int rc = PyDict_GetItemRef(self->accounts, key, &r->accounts[i]);
        Py_DECREF(key);
        if (rc <= 0) return rc;
    }
    return 1;
}

/* The post or void of pending record `p`, packed into `out`. */
static void
pack_resolution(unsigned char *out, const unsigned char *p, u128 id, int flags, uint64_t now)
{
    put_u128(out, P_ID, id);
    memcpy(out + P_DEBIT, p + P_DEBIT, P_PENDING_ID - P_DEBIT);  /* debit, credit, the whole amount */
    memcpy(out + P_PENDING_ID, p + P_ID, 16);
    memcpy(out + P_UD128, p + P_UD128, P_TIMEOUT - P_UD128);  /* the user data */
    put_uint(out, P_TIMEOUT, 4, 0);
    memcpy(out + P_LEDGER, p + P_LEDGER, P_FLAGS - P_LEDGER);  /* ledger, code */
    put_uint(out, P_FLAGS, 2, (uint64_t)flags);
    put_uint(out, P_TIMESTAMP, 8, now);
}

/* Under the locks: post or void both pending transfers, or nothing.  Both resolutions
 * packed into `out` and 1; 0 not here; -1 error. */
static int
apply_resolution_pair(EngineObject *self, PyObject *const ids[2], const u128 id128[2],
                      PyObject *const pendings[2], Resolving r[2], int flag, uint64_t now,
                      unsigned char out[2 * RECORD_BYTES])
{
    PyObject *tables[2] = {shard(self, id128[0]), shard(self, id128[1])};
    int rc = ids_taken(self, tables[0], ids[0], tables[1], ids[1]);
    if (rc != 0) return rc < 0 ? -1 : 0;
    for (int i = 0; i < 2; i++) {
        StoredObject *record = r[i].record;
        int state = __atomic_load_n(&record->state, __ATOMIC_RELAXED);
        if (state != OPEN || (record->expires_at && now >= record->expires_at)) return 0;
    }
    for (int i = 0; i < 2; i++) {
        if ((rc = resolving_accounts(self, &r[i])) <= 0) return rc;  /* (the general path reports what is missing) */
        if ((rc = read_account(r[i].accounts[0], &r[i].dr)) != 0
                || (rc = read_account(r[i].accounts[1], &r[i].cr)) != 0)
            return rc < 0 ? -1 : 0;
        u128 s;
        if (flag == POST && (__builtin_add_overflow(r[i].dr.debits_posted, r[i].amount, &s)
                             || __builtin_add_overflow(r[i].cr.credits_posted, r[i].amount, &s)))
            return 0;  /* checked for both legs before either changes */
        /* The pending amounts are in the accounts' pending sums. */
        if (r[i].dr.debits_pending < r[i].amount || r[i].cr.credits_pending < r[i].amount) return 0;
    }
    for (int i = 0; i < 2; i++) {
        Resolving *leg = &r[i];
        unsigned char *resolution = out + RECORD_BYTES * i;
        pack_resolution(resolution, leg->record->packed, id128[i], i == 0 ? flag | LINKED : flag, now);
        if (write_balance(&leg->dr, N_DEBITS_PENDING, leg->dr.debits_pending - leg->amount) < 0) return -1;
        if (write_balance(&leg->cr, N_CREDITS_PENDING, leg->cr.credits_pending - leg->amount) < 0) return -1;
        if (flag == POST) {
            if (write_balance(&leg->dr, N_DEBITS_POSTED, leg->dr.debits_posted + leg->amount) < 0) return -1;
            if (write_balance(&leg->cr, N_CREDITS_POSTED, leg->cr.credits_posted + leg->amount) < 0) return -1;
        }
        __atomic_store_n(&leg->record->state, flag == POST ? POSTED : VOIDED, __ATOMIC_RELAXED);
        if (leg->record->expires_at && wheel_remove(self, leg->debit, leg->record->expires_at, pendings[i]) < 0)
            return -1;
        PyObject *record = stored_packed(resolution, 0, 0, NULL, NULL);
        if (record == NULL) return -1;
        rc = PyDict_SetItem(tables[i], ids[i], record);
        Py_DECREF(record);
        if (rc < 0) return -1;
    }
    return 1;
}

/* Post or void two pending legs: their two resolutions packed (bytes), None when the
 * general path must answer, NULL on error. */
static PyObject *
resolve_ids(EngineObject *self, PyObject *const ids[2], PyObject *const pendings[2], int post, PyObject *now_obj)
{
    uint64_t now;
    if (now_of(now_obj, &now) < 0) return NULL;
    u128 id128[2], pending128[2];
    for (int i = 0; i < 2; i++) {
        if (as_u128(ids[i], &id128[i]) != 0 || as_u128(pendings[i], &pending128[i]) != 0) Py_RETURN_NONE;
        if (id128[i] == 0 || id128[i] >= EXPIRY_ID_BIT) Py_RETURN_NONE;
    }
    if (id128[0] == id128[1]) Py_RETURN_NONE;
    Resolving r[2];
    PyObject *records[2] = {NULL, NULL};
    PyObject *result = NULL;
    memset(r, 0, sizeof(r));
    for (int i = 0; i < 2; i++) {
        int rc = PyDict_GetItemRef(shard(self, pending128[i]), pendings[i], &records[i]);
        if (rc < 0) goto done;
        if (rc == 0 || !Py_IS_TYPE(records[i], &StoredType) || read_resolving((StoredObject *)records[i], &r[i])) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    u128 accounts[4] = {r[0].debit, r[0].credit, r[1].debit, r[1].credit};
    for (int i = 0; i < 4; i++) {
        for (int j = i + 1; j < 4; j++) {
            if (accounts[i] == accounts[j]) {
                result = Py_NewRef(Py_None);
                goto done;
            }
        }
    }
    HeldSet held = {.count = 0};
    held_add(&held, stripe_of(id128[0], self->mask));
    held_add(&held, stripe_of(id128[1], self->mask));
    for (int i = 0; i < 4; i++) held_add(&held, stripe_of(accounts[i], self->mask));
    if (hold(self, &held) < 0) goto done;
    unsigned char out[2 * RECORD_BYTES];
    int applied = apply_resolution_pair(self, ids, id128, pendings, r, post ? POST : VOID, now, out);
    int released = let_go(self, &held);
    if (applied > 0 && released == 0) {
        result = PyBytes_FromStringAndSize((const char *)out, sizeof(out));
    } else if (applied == 0 && released == 0) {
        result = Py_NewRef(Py_None);
    }
done:
    for (int i = 0; i < 2; i++) {
        Py_XDECREF(records[i]);
        Py_XDECREF(r[i].accounts[0]);
        Py_XDECREF(r[i].accounts[1]);
    }
    return result;
}

static PyObject *
Engine_resolve_pair(EngineObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "resolve_pair(first_id, first_pending, second_id, second_pending, post, now)");
        return NULL;
    }
    PyObject *ids[2] = {args[0], args[2]}, *pendings[2] = {args[1], args[3]};
    int post = PyObject_IsTrue(args[4]);
    if (post < 0) return NULL;
    return resolve_ids(self, ids, pendings, post, args[5]);
}

/* ---- remembering resolved ids (state.py's idempotency window) */

/* Forget one id: drop its stored transfer unless it is a pending one still open, and
 * its burned-id entry, under its stripe's lock. */
static int
forget(EngineObject *self, PyObject *id)
{
    u128 id128;
    if (as_u128(id, &id128) != 0) return 0;  /* never stored */
    uint64_t stripe = stripe_of(id128, self->mask);
    if (call_lock(self, stripe, N_ACQUIRE) < 0) return -1;
    PyObject *table = PyTuple_GET_ITEM(self->shards, (Py_ssize_t)stripe), *stored;
    int rc = PyDict_GetItemRef(table, id, &stored);
    if (rc > 0) {
        int open = Py_IS_TYPE(stored, &StoredType)
                   && __atomic_load_n(&((StoredObject *)stored)->state, __ATOMIC_RELAXED) == OPEN;
        Py_DECREF(stored);
        if (!open) rc = PyDict_Pop(table, id, NULL);
    }
    if (rc >= 0) rc = PyDict_Pop(self->failed, id, NULL);
    if (call_lock(self, stripe, N_RELEASE) < 0) rc = -1;
    return rc < 0 ? -1 : 0;
}

/* Queue ids; forget (outside the queue's mutex) those beyond the newest `recent_ids`. */
static int
remember(EngineObject *self, PyObject *const *ids, Py_ssize_t n)
{
    Recent *q = &self->recent;
    PyObject *small[8], **old = small;
    Py_ssize_t n_old = 0;
    PyMutex_Lock(&q->mutex);
    if (q->count + n > q->capacity) {
        Py_ssize_t capacity = q->capacity ? q->capacity : 64;
        while (capacity < q->count + n) capacity *= 2;
        PyObject **items = PyMem_RawMalloc((size_t)capacity * sizeof(PyObject *));
        if (items == NULL) {
            PyMutex_Unlock(&q->mutex);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < q->count; i++) items[i] = q->items[(q->head + i) % q->capacity];
        PyMem_RawFree(q->items);
        q->items = items;
        q->capacity = capacity;
        q->head = 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) q->items[(q->head + q->count++) % q->capacity] = Py_NewRef(ids[i]);
    Py_ssize_t excess = q->count - q->limit;
    if (excess > 0) {
        if (excess > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
            old = PyMem_RawMalloc((size_t)excess * sizeof(PyObject *));
            if (old == NULL) excess = 0;  /* forgotten on a later call */
        }
        for (; n_old < excess; n_old++) {
            old[n_old] = q->items[q->head];
            q->head = (q->head + 1) % q->capacity;
            q->count--;
        }
    }
    PyMutex_Unlock(&q->mutex);
    int rc = 0;
    for (Py_ssize_t i = 0; i < n_old; i++) {
        if (rc == 0 && forget(self, old[i]) < 0) rc = -1;
        Py_DECREF(old[i]);
    }
    if (old != small) PyMem_RawFree(old);
    return rc;
}

static PyObject *
Engine_remember(EngineObject *self, PyObject *ids)
{
    PyObject *seq = PySequence_Fast(ids, "remember needs a sequence of ids");
    if (seq == NULL) return NULL;
    int rc = remember(self, PySequence_Fast_ITEMS(seq), PySequence_Fast_GET_SIZE(seq));
    Py_DECREF(seq);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

/* ---- the packet books' own calls: ids and transfers made here */

/* books.py's packet_transfer_id. */
static u128
packet_transfer_id(u128 epoch, u128 packet_id, int leg, int phase)
{
    return (u128)PACKET_TAG << 120 | (epoch & EPOCH_MASK) << 72 | (packet_id & UINT64_MAX) << 8
           | (u128)leg << 2 | (u128)phase;
}

static int
epoch_and_packet(PyObject *epoch_obj, PyObject *packet_obj, u128 *epoch, u128 *packet)
{
    if (as_u128(epoch_obj, epoch) != 0 || as_u128(packet_obj, packet) != 0) {
        PyErr_SetString(PyExc_ValueError, "epoch and packet id must be non-negative ints");
        return -1;
    }
    return 0;
}

enum {  /* reserve_packet's arguments */
    R_EPOCH, R_PACKET, R_IN_DEBIT, R_IN_CREDIT, R_OUT_DEBIT, R_OUT_CREDIT, R_IN_AMOUNT, R_OUT_AMOUNT,
    R_UD128, R_IN_UD32, R_OUT_UD32, R_TIMEOUT, R_IN_LEDGER, R_OUT_LEDGER, R_CODE, R_NOW, R_COUNT
};

/* The two legs as Python transfers, for the general path (a tuple; NULL on error). */
static PyObject *
legs_as_transfers(PyObject *const *args, u128 epoch, u128 packet)
{
    PyObject *legs = PyTuple_New(2);
    if (legs == NULL) return NULL;
    for (int leg = 0; leg < 2; leg++) {
        PyObject *values[TRANSFER_FIELDS] = {
            from_u128(packet_transfer_id(epoch, packet, leg, PHASE_PENDING)),  /* id */
            Py_NewRef(args[R_IN_DEBIT + 2 * leg]), Py_NewRef(args[R_IN_CREDIT + 2 * leg]),
            Py_NewRef(args[R_IN_AMOUNT + leg]),
            PyLong_FromLong(0),  /* pending_id */
            Py_NewRef(args[R_UD128]), Py_NewRef(args[R_PACKET]), Py_NewRef(args[R_IN_UD32 + leg]),
            Py_NewRef(args[R_TIMEOUT]), Py_NewRef(args[R_IN_LEDGER + leg]), Py_NewRef(args[R_CODE]),
            PyLong_FromLong(leg == 0 ? PENDING | LINKED : PENDING),
            PyLong_FromLong(0),  /* timestamp */
        };
        int ok = 1;
        for (int i = 0; i < TRANSFER_FIELDS; i++) ok = ok && values[i] != NULL;
        if (!ok) {
            for (int i = 0; i < TRANSFER_FIELDS; i++) Py_XDECREF(values[i]);
            Py_DECREF(legs);
            return NULL;
        }
        PyObject *t = new_transfer(values);
        if (t == NULL) {
            Py_DECREF(legs);
            return NULL;
        }
        PyTuple_SET_ITEM(legs, leg, t);
    }
    return legs;
}

/* The legs made from reserve_packet's arguments, packed: 0, or 1 when some value does not
 * fit its TigerBeetle field (then the general path answers). */
static int
make_legs(PendingPair *pair, PyObject *const *args, u128 epoch, u128 packet)
{
    u128 v[R_COUNT];
    for (int i = R_IN_DEBIT; i < R_NOW; i++) {
        if (as_u128(args[i], &v[i]) != 0) return 1;
    }
    if (packet > UINT64_MAX || v[R_TIMEOUT] > UINT32_MAX || v[R_CODE] > UINT16_MAX) return 1;
    for (int leg = 0; leg < 2; leg++) {
        if (v[R_IN_UD32 + leg] > UINT32_MAX || v[R_IN_LEDGER + leg] > UINT32_MAX) return 1;
    }
    for (int leg = 0; leg < 2; leg++) {
        TransferView *t = &pair->t[leg];
        *t = (TransferView){
            .id = packet_transfer_id(epoch, packet, leg, PHASE_PENDING),
            .debit = v[R_IN_DEBIT + 2 * leg], .credit = v[R_IN_CREDIT + 2 * leg], .amount = v[R_IN_AMOUNT + leg],
            .pending_id = 0, .timeout = v[R_TIMEOUT], .ledger = v[R_IN_LEDGER + leg], .code = v[R_CODE],
            .flags = leg == 0 ? PENDING | LINKED : PENDING, .timestamp = 0,
        };
        unsigned char *out = pair->packed[leg];
        put_u128(out, P_ID, t->id);
        put_u128(out, P_DEBIT, t->debit);
        put_u128(out, P_CREDIT, t->credit);
        put_u128(out, P_AMOUNT, t->amount);
        put_u128(out, P_PENDING_ID, 0);
        put_u128(out, P_UD128, v[R_UD128]);
        put_uint(out, P_UD64, 8, (uint64_t)packet);
        put_uint(out, P_UD32, 4, (uint64_t)v[R_IN_UD32 + leg]);
        put_uint(out, P_TIMEOUT, 4, (uint64_t)t->timeout);
        put_uint(out, P_LEDGER, 4, (uint64_t)t->ledger);
        put_uint(out, P_CODE, 2, (uint64_t)t->code);
        put_uint(out, P_FLAGS, 2, (uint64_t)t->flags);
        put_uint(out, P_TIMESTAMP, 8, 0);
    }
    return 0;
}

/* reserve_packet(epoch, packet_id, in_debit, in_credit, out_debit, out_credit, in_amount,
 *                out_amount, user_data_128, in_user_data_32, out_user_data_32, timeout,
 *                in_ledger, out_ledger, code, now)
 * -> both legs packed (bytes) when reserved here, else (first, second) as transfers for
 *    the general path. */
/* Reserve the legs made from reserve_packet's arguments: 1 reserved (`pair->packed` holds
 * them, timestamps set), 0 the general path must answer (nothing changed), -1 error. */
static int
reserve_legs(EngineObject *self, PendingPair *pair, PyObject *const *args, u128 epoch, u128 packet, uint64_t now)
{
    if (make_legs(pair, args, epoch, packet) != 0) return 0;
    for (int leg = 0; leg < 2; leg++) {
        if ((pair->ids[leg] = from_u128(pair->t[leg].id)) == NULL) return -1;
        pair->account_ids[2 * leg] = Py_NewRef(args[R_IN_DEBIT + 2 * leg]);
        pair->account_ids[2 * leg + 1] = Py_NewRef(args[R_IN_CREDIT + 2 * leg]);
    }
    return try_pending_pair(self, pair, args[R_NOW], now);
}

static PyObject *
Engine_reserve_packet(EngineObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != R_COUNT) {
        PyErr_SetString(PyExc_TypeError, "reserve_packet takes 16 arguments");
        return NULL;
    }
    u128 epoch, packet;
    uint64_t now;
    if (epoch_and_packet(args[R_EPOCH], args[R_PACKET], &epoch, &packet) < 0 || now_of(args[R_NOW], &now) < 0)
        return NULL;
    PendingPair pair;
    memset(&pair, 0, sizeof(pair));
    PyObject *result = NULL;
    int applied = reserve_legs(self, &pair, args, epoch, packet, now);
    if (applied > 0) {
        result = PyBytes_FromStringAndSize((const char *)pair.packed, sizeof(pair.packed));
    } else if (applied == 0) {
        result = legs_as_transfers(args, epoch, packet);
    }
    pair_clear(&pair);
    return result;
}

/* resolve_packet(epoch, packet_id, post, now) -> both resolutions packed (bytes), or
 * None: the books' commit and release; the resolved ids are remembered. */
/* Post or void both legs of a packet: both resolutions packed (bytes), or None when the
 * general path must answer; the resolved ids are remembered. */
static PyObject *
resolve_legs(EngineObject *self, u128 epoch, u128 packet, int post, PyObject *now_obj)
{
    int phase = post ? PHASE_POST : PHASE_VOID;
    PyObject *ids[4] = {  /* in the order state.py remembers them */
        from_u128(packet_transfer_id(epoch, packet, LEG_IN, PHASE_PENDING)),
        from_u128(packet_transfer_id(epoch, packet, LEG_IN, phase)),
        from_u128(packet_transfer_id(epoch, packet, LEG_OUT, PHASE_PENDING)),
        from_u128(packet_transfer_id(epoch, packet, LEG_OUT, phase)),
    };
    PyObject *result = NULL;
    if (ids[0] && ids[1] && ids[2] && ids[3]) {
        PyObject *resolutions[2] = {ids[1], ids[3]}, *pendings[2] = {ids[0], ids[2]};
        result = resolve_ids(self, resolutions, pendings, post, now_obj);
        if (result != NULL && result != Py_None && remember(self, ids, 4) < 0) Py_CLEAR(result);
    }
    for (int i = 0; i < 4; i++) Py_XDECREF(ids[i]);
    return result;
}

/* resolve_packet(epoch, packet_id, post, now) -> both resolutions packed (bytes), or
 * None: the books' commit and release. */
static PyObject *
Engine_resolve_packet(EngineObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "resolve_packet(epoch, packet_id, post, now)");
        return NULL;
    }
    u128 epoch, packet;
    if (epoch_and_packet(args[0], args[1], &epoch, &packet) < 0) return NULL;
    int post = PyObject_IsTrue(args[2]);
    if (post < 0) return NULL;
    return resolve_legs(self, epoch, packet, post, args[3]);
}

/* ---- construction */

static int
transfer_offsets(PyTypeObject *type, Py_ssize_t offsets[TRANSFER_FIELDS])
{
    for (int i = 0; i < TRANSFER_FIELDS; i++) {
        PyObject *descr = PyObject_GetAttr((PyObject *)type, names[i]);
        if (descr == NULL) return -1;
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type)
                 && ((PyMemberDescrObject *)descr)->d_member->type == Py_T_OBJECT_EX;
        if (ok) offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%s.%U must be a __slots__ field", type->tp_name, names[i]);
            return -1;
        }
    }
    return 0;
}

/* The class transfers are made of: the first engine's (kept for the module's life). */
static int
set_transfer_type(PyTypeObject *type)
{
    Py_ssize_t offsets[TRANSFER_FIELDS];
    if (transfer_offsets(type, offsets) < 0) return -1;
    int rc = 0;
    PyMutex_Lock(&transfer_type_mutex);
    if (transfer_type == NULL) {
        memcpy(transfer_slots, offsets, sizeof(offsets));
        transfer_type = (PyTypeObject *)Py_NewRef(type);
    } else if (transfer_type != type) {
        PyErr_SetString(PyExc_TypeError, "every PairEngine must use the same transfer class");
        rc = -1;
    }
    PyMutex_Unlock(&transfer_type_mutex);
    return rc;
}

static int
Engine_init(EngineObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"locks", "accounts", "shards", "failed", "wheels", "transfer_type", "recent_ids",
                               NULL};
    PyObject *locks, *accounts, *shards, *failed, *wheels, *transfer_type;
    Py_ssize_t recent_ids;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!O!O!O!O!n", keywords, &PyTuple_Type, &locks,
                                     &PyDict_Type, &accounts, &PyTuple_Type, &shards, &PyDict_Type, &failed,
                                     &PyTuple_Type, &wheels, &PyType_Type, &transfer_type, &recent_ids))
        return -1;
    if (recent_ids < 0) {
        PyErr_SetString(PyExc_ValueError, "recent_ids must be >= 0");
        return -1;
    }
    if (self->recent.items != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a PairEngine is initialised once");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(locks);
    if (n == 0 || (n & (n - 1)) || PyTuple_GET_SIZE(shards) != n || PyTuple_GET_SIZE(wheels) != n) {
        PyErr_SetString(PyExc_ValueError, "locks, shards and wheels: one per stripe, a power of two");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyDict_Check(PyTuple_GET_ITEM(shards, i)) || !PyDict_Check(PyTuple_GET_ITEM(wheels, i))) {
            PyErr_SetString(PyExc_TypeError, "shards and wheels must hold dicts");
            return -1;
        }
    }
    if (set_transfer_type((PyTypeObject *)transfer_type) < 0) return -1;
    PyObject *acquire = PyTuple_New(n), *release = PyTuple_New(n);
    if (acquire == NULL || release == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *lock = PyTuple_GET_ITEM(locks, i), *a, *r;
        if ((a = PyObject_GetAttr(lock, names[N_ACQUIRE])) == NULL) goto fail;
        PyTuple_SET_ITEM(acquire, i, a);
        if ((r = PyObject_GetAttr(lock, names[N_RELEASE])) == NULL) goto fail;
        PyTuple_SET_ITEM(release, i, r);
    }
    Py_XSETREF(self->acquire, acquire);
    Py_XSETREF(self->release, release);
    Py_XSETREF(self->accounts, Py_NewRef(accounts));
    Py_XSETREF(self->shards, Py_NewRef(shards));
    Py_XSETREF(self->failed, Py_NewRef(failed));
    Py_XSETREF(self->wheels, Py_NewRef(wheels));
    self->mask = (uint64_t)n - 1;
    self->recent.limit = recent_ids;
    return 0;
fail:
    Py_XDECREF(acquire);
    Py_XDECREF(release);
    return -1;
}

static int
Engine_traverse(EngineObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->accounts);
    Py_VISIT(self->shards);
    Py_VISIT(self->failed);
    Py_VISIT(self->wheels);
    return 0;
}

static int
Engine_clear(EngineObject *self)
{
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->accounts);
    Py_CLEAR(self->shards);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->wheels);
    return 0;
}

static void
Engine_dealloc(EngineObject *self)
{
    PyObject_GC_UnTrack(self);
    Engine_clear(self);
    Recent *q = &self->recent;
    for (Py_ssize_t i = 0; i < q->count; i++) Py_DECREF(q->items[(q->head + i) % q->capacity]);
    PyMem_RawFree(q->items);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL
static PyMethodDef Engine_methods[] = {
    {"create_pending_pair", FASTCALL(Engine_create_pending_pair),
     "create_pending_pair(first, second, now) -> bool: both reserved (their timestamps set to now), "
     "or False and nothing changed"},
    {"resolve_pair", FASTCALL(Engine_resolve_pair),
     "resolve_pair(first_id, first_pending, second_id, second_pending, post, now) -> [two transfers] "
     "created, or None and nothing changed"},
    {"reserve_packet", FASTCALL(Engine_reserve_packet),
     "reserve_packet(epoch, packet_id, in_debit, in_credit, out_debit, out_credit, in_amount, out_amount, "
     "user_data_128, in_user_data_32, out_user_data_32, timeout, in_ledger, out_ledger, code, now) -> "
     "(reserved, first, second): the packet books' two pending legs, made here and reserved if plain"},
    {"resolve_packet", FASTCALL(Engine_resolve_packet),
     "resolve_packet(epoch, packet_id, post, now) -> [two transfers] or None: post or void both legs"},
    {"remember", (PyCFunction)Engine_remember, METH_O,
     "remember(ids): queue resolved ids; forget those beyond the newest recent_ids"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "connector.ledger._fastpath.PairEngine",
    .tp_doc = "The packet pair's reserve and resolve on a LedgerState's containers (see the module doc).",
    .tp_basicsize = sizeof(EngineObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_traverse = (traverseproc)Engine_traverse,
    .tp_clear = (inquiry)Engine_clear,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

/* ------------------------------------------------------------------ PacketLane */

/* One thread's packet path into the books: `PacketBooks.reserve`, `commit` and `release`
 * of the common packet, each in one call, with the record published straight into the
 * ledger ring through the thread's emitter's ring handle.  Whenever the common case does
 * not hold (the emitter has a backlog, a peer has no accounts, a value is unusual, the
 * engine says "not here") it changes nothing and answers False: the caller then takes
 * books.py's path, which is the reference (tests/ledger/test_ledger_lane.py holds the
 * two to the same records and balances).  When the ring is full, or the record needs
 * more than one slot, the record goes through the emitter itself (its backlog keeps the
 * order). */

/* The ledger ring's slots (records.py): emitter id u32, flags u8 (MORE = 1), 3 bytes; then
 * a record: accounts u16, transfers u16, kind u8 (PLAIN 0, HELD_REPLY 1), 3 bytes, target
 * u64; the accounts and the transfers (128 bytes each); a held reply's payload. */
enum { SLOT_HEAD = 8, RECORD_HEAD = 16, SLOT_MORE = 1, KIND_PLAIN = 0, KIND_HELD_REPLY = 1 };

typedef struct {
    PyObject_HEAD
    EngineObject *engine;
    PyObject *legs;       /* dict: peer index -> (in_limit, out_limit, ledger), kept by the books */
    PyObject *epoch;      /* int */
    PyObject *timeout;    /* int: seconds */
    PyObject *code;       /* int: the packet transfers' code */
    PyObject *clock;      /* () -> ns since the epoch */
    PyObject *put;        /* the ring handle's put(data) -> 1 done, 0 full, -1 closed */
    PyObject *backlog;    /* the emitter's backlog: while it holds anything, the emitter publishes */
    PyObject *emit_body;  /* the emitter's _emit_body(accounts, transfers, body, reply) */
    u128 epoch128;
    Py_ssize_t room;      /* a slot's bytes after the slot header */
    unsigned char slot_header[SLOT_HEAD];
} LaneObject;

/* 1 when the emitter has records waiting (the lane must not overtake them), 0, -1 error. */
static int
lane_backlogged(LaneObject *self)
{
    Py_ssize_t n = PyObject_Length(self->backlog);
    return n < 0 ? -1 : n > 0;
}

/* The clock's now (a new reference) and its value; NULL on error. */
static PyObject *
lane_now(LaneObject *self, uint64_t *now)
{
    PyObject *now_obj = PyObject_CallNoArgs(self->clock);
    if (now_obj != NULL && now_of(now_obj, now) < 0) Py_CLEAR(now_obj);
    return now_obj;
}

/* Publish a record of two packed transfers (and a held reply's bytes): into one ring slot
 * when it fits and there is room, else through the emitter.  0, or -1 on error. */
static int
lane_publish(LaneObject *self, int kind, PyObject *target, const unsigned char *transfers, PyObject *tail)
{
    Py_ssize_t body = 2 * RECORD_BYTES, tail_len = tail == NULL ? 0 : PyBytes_GET_SIZE(tail);
    if (RECORD_HEAD + body + tail_len <= self->room) {
        uint64_t target64 = target == NULL ? 0 : PyLong_AsUnsignedLongLong(target);
        if (target64 == (uint64_t)-1 && PyErr_Occurred()) return -1;
        PyObject *slot = PyBytes_FromStringAndSize(NULL, SLOT_HEAD + RECORD_HEAD + body + tail_len);
        if (slot == NULL) return -1;
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(slot);
        memcpy(out, self->slot_header, SLOT_HEAD);
        unsigned char *record = out + SLOT_HEAD;
        memset(record, 0, RECORD_HEAD);
        record[2] = 2;  /* transfers (u16 LE); accounts stay 0 */
        record[4] = (unsigned char)kind;
        for (int i = 0; i < 8; i++) record[8 + i] = (unsigned char)(target64 >> (8 * i));
        memcpy(record + RECORD_HEAD, transfers, (size_t)body);
        if (tail_len) memcpy(record + RECORD_HEAD + body, PyBytes_AS_STRING(tail), (size_t)tail_len);
        PyObject *done = PyObject_CallOneArg(self->put, slot);
        Py_DECREF(slot);
        if (done == NULL) return -1;
        long put = PyLong_AsLong(done);
        Py_DECREF(done);
        if (put == 1) return 0;
        if (put == -1 && PyErr_Occurred()) return -1;
        /* full (or closed: the emitter raises RingClosed as it always does) */
    }
    PyObject *packed = PyBytes_FromStringAndSize((const char *)transfers, body);
    PyObject *reply = tail == NULL ? Py_NewRef(Py_None) : PyTuple_Pack(2, target, tail);
    PyObject *r = NULL;
    if (packed != NULL && reply != NULL) {
        PyObject *args[4] = {NULL, NULL, packed, reply};
        args[0] = PyLong_FromLong(0);
        args[1] = PyLong_FromLong(2);
        if (args[0] != NULL && args[1] != NULL) r = PyObject_Vectorcall(self->emit_body, args, 4, NULL);
        Py_XDECREF(args[0]);
        Py_XDECREF(args[1]);
    }
    Py_XDECREF(packed);
    Py_XDECREF(reply);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* One peer's (in_limit, out_limit, ledger): a new reference, or NULL (error set or not). */
static PyObject *
lane_legs_of(LaneObject *self, PyObject *peer)
{
    PyObject *legs;
    if (PyDict_GetItemRef(self->legs, peer, &legs) <= 0) return NULL;
    if (!PyTuple_CheckExact(legs) || PyTuple_GET_SIZE(legs) != 3) {
        Py_DECREF(legs);
        return NULL;
    }
    return legs;
}

/* reserve(packet_id, in_peer, in_amount, out_peer, out_amount, condition) -> bool */
static PyObject *
Lane_reserve(LaneObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "reserve(packet_id, in_peer, in_amount, out_peer, out_amount, condition)");
        return NULL;
    }
    int backlogged = lane_backlogged(self);
    if (backlogged != 0) return backlogged < 0 ? NULL : Py_NewRef(Py_False);
    u128 packet;
    if (as_u128(args[0], &packet) != 0) Py_RETURN_FALSE;
    PyObject *a = NULL, *b = NULL, *reference = NULL, *now_obj = NULL, *result = NULL;
    Py_buffer condition = {.buf = NULL};
    PendingPair pair;
    memset(&pair, 0, sizeof(pair));
    if ((a = lane_legs_of(self, args[1])) == NULL || (b = lane_legs_of(self, args[3])) == NULL) {
        if (!PyErr_Occurred()) result = Py_NewRef(Py_False);
        goto done;
    }
    if (PyObject_GetBuffer(args[5], &condition, PyBUF_SIMPLE) < 0) goto done;
    if (condition.len < 16) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    reference = PyLong_FromUnsignedNativeBytes(condition.buf, 16, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
    uint64_t now;
    if (reference == NULL || (now_obj = lane_now(self, &now)) == NULL) goto done;
    PyObject *const legs_args[R_COUNT] = {
        [R_EPOCH] = self->epoch, [R_PACKET] = args[0],
        [R_IN_DEBIT] = PyTuple_GET_ITEM(a, 0), [R_IN_CREDIT] = PyTuple_GET_ITEM(a, 1),
        [R_OUT_DEBIT] = PyTuple_GET_ITEM(b, 1), [R_OUT_CREDIT] = PyTuple_GET_ITEM(b, 0),
        [R_IN_AMOUNT] = args[2], [R_OUT_AMOUNT] = args[4], [R_UD128] = reference,
        [R_IN_UD32] = args[1], [R_OUT_UD32] = args[3], [R_TIMEOUT] = self->timeout,
        [R_IN_LEDGER] = PyTuple_GET_ITEM(a, 2), [R_OUT_LEDGER] = PyTuple_GET_ITEM(b, 2),
        [R_CODE] = self->code, [R_NOW] = now_obj,
    };
    int applied = reserve_legs(self->engine, &pair, legs_args, self->epoch128, packet, now);
    if (applied < 0) goto done;
    if (applied == 0) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    if (lane_publish(self, KIND_PLAIN, NULL, pair.packed[0], NULL) == 0) result = Py_NewRef(Py_True);
done:
    pair_clear(&pair);
    if (condition.buf != NULL) PyBuffer_Release(&condition);
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(reference);
    Py_XDECREF(now_obj);
    return result;
}

/* Post (commit) or void (release) both legs and publish the record. */
static PyObject *
lane_resolve(LaneObject *self, PyObject *packet_id, int post, PyObject *target, PyObject *tail)
{
    int backlogged = lane_backlogged(self);
    if (backlogged != 0) return backlogged < 0 ? NULL : Py_NewRef(Py_False);
    u128 packet;
    if (as_u128(packet_id, &packet) != 0 || packet > UINT64_MAX) Py_RETURN_FALSE;
    uint64_t now;
    PyObject *now_obj = lane_now(self, &now);
    if (now_obj == NULL) return NULL;
    PyObject *packed = resolve_legs(self->engine, self->epoch128, packet, post, now_obj);
    Py_DECREF(now_obj);
    if (packed == NULL || packed == Py_None) return packed == NULL ? NULL : (Py_DECREF(packed), Py_NewRef(Py_False));
    int rc = lane_publish(self, tail == NULL ? KIND_PLAIN : KIND_HELD_REPLY, target,
                          (const unsigned char *)PyBytes_AS_STRING(packed), tail);
    Py_DECREF(packed);
    return rc < 0 ? NULL : Py_NewRef(Py_True);
}

/* commit(packet_id, reply_target, reply) -> bool */
static PyObject *
Lane_commit(LaneObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyLong_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "commit(packet_id, reply_target: int, reply: bytes)");
        return NULL;
    }
    return lane_resolve(self, args[0], 1, args[1], args[2]);
}

/* release(packet_id) -> bool */
static PyObject *
Lane_release(LaneObject *self, PyObject *packet_id)
{
    return lane_resolve(self, packet_id, 0, NULL, NULL);
}

static int
Lane_init(LaneObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"engine", "legs", "epoch", "timeout", "code", "clock", "put", "backlog",
                               "emit_body", "emitter_id", "room", NULL};
    PyObject *engine, *legs, *epoch, *timeout, *code, *clock, *put, *backlog, *emit_body;
    unsigned int emitter_id;
    Py_ssize_t room;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!O!O!O!OOOOIn", keywords, &EngineType, &engine,
                                     &PyDict_Type, &legs, &PyLong_Type, &epoch, &PyLong_Type, &timeout,
                                     &PyLong_Type, &code, &clock, &put, &backlog, &emit_body, &emitter_id, &room))
        return -1;
    u128 epoch128;
    if (as_u128(epoch, &epoch128) != 0) {
        PyErr_SetString(PyExc_ValueError, "epoch must be a non-negative int");
        return -1;
    }
    if (!PyCallable_Check(clock) || !PyCallable_Check(put) || !PyCallable_Check(emit_body)) {
        PyErr_SetString(PyExc_TypeError, "clock, put and emit_body must be callable");
        return -1;
    }
    self->epoch128 = epoch128;
    self->room = room;
    memset(self->slot_header, 0, SLOT_HEAD);
    for (int i = 0; i < 4; i++) self->slot_header[i] = (unsigned char)(emitter_id >> (8 * i));
    Py_XSETREF(self->engine, (EngineObject *)Py_NewRef(engine));
    Py_XSETREF(self->legs, Py_NewRef(legs));
    Py_XSETREF(self->epoch, Py_NewRef(epoch));
    Py_XSETREF(self->timeout, Py_NewRef(timeout));
    Py_XSETREF(self->code, Py_NewRef(code));
    Py_XSETREF(self->clock, Py_NewRef(clock));
    Py_XSETREF(self->put, Py_NewRef(put));
    Py_XSETREF(self->backlog, Py_NewRef(backlog));
    Py_XSETREF(self->emit_body, Py_NewRef(emit_body));
    return 0;
}

static int
Lane_traverse(LaneObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->engine);
    Py_VISIT(self->legs);
    Py_VISIT(self->epoch);
    Py_VISIT(self->timeout);
    Py_VISIT(self->code);
    Py_VISIT(self->clock);
    Py_VISIT(self->put);
    Py_VISIT(self->backlog);
    Py_VISIT(self->emit_body);
    return 0;
}

static int
Lane_clear(LaneObject *self)
{
    Py_CLEAR(self->engine);
    Py_CLEAR(self->legs);
    Py_CLEAR(self->epoch);
    Py_CLEAR(self->timeout);
    Py_CLEAR(self->code);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->put);
    Py_CLEAR(self->backlog);
    Py_CLEAR(self->emit_body);
    return 0;
}

static void
Lane_dealloc(LaneObject *self)
{
    PyObject_GC_UnTrack(self);
    Lane_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Lane_methods[] = {
    {"reserve", FASTCALL(Lane_reserve),
     "reserve(packet_id, in_peer, in_amount, out_peer, out_amount, condition) -> bool: both legs reserved "
     "and their record published (the condition's first 16 bytes are the legs' user_data_128), or False "
     "and nothing changed"},
    {"commit", FASTCALL(Lane_commit),
     "commit(packet_id, reply_target, reply) -> bool: both legs posted and their record published with the "
     "held reply, or False and nothing changed"},
    {"release", (PyCFunction)Lane_release, METH_O,
     "release(packet_id) -> bool: both legs voided and their record published, or False and nothing changed"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "connector.ledger._fastpath.PacketLane",
    .tp_doc = "One thread's reserve, commit and release of the common packet, with the record published.",
    .tp_basicsize = sizeof(LaneObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lane_init,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_clear,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_methods = Lane_methods,
};

/* ------------------------------------------------------------------ packing */

/* TigerBeetle's tb_transfer_t: six u128 (id, debit, credit, amount, pending_id,
 * user_data_128), user_data_64 u64, user_data_32 u32, timeout u32, ledger u32, code u16,
 * flags u16, timestamp u64; little-endian, 128 bytes. */
static int
pack_into(PyObject *t, unsigned char *out)
{
    static const int wide[] = {N_ID, N_DEBIT, N_CREDIT, N_AMOUNT, N_PENDING_ID, N_UD128};
    static const struct { int name; int size; int offset; } narrow[] = {
        {N_UD64, 8, 96}, {N_UD32, 4, 104}, {N_TIMEOUT, 4, 108}, {N_LEDGER, 4, 112},
        {N_CODE, 2, 116}, {N_FLAGS, 2, 118}, {N_TIMESTAMP, 8, 120},
    };
    for (int i = 0; i < 6; i++) {
        u128 v;
        int rc = attr_u128(t, wide[i], &v);
        if (rc < 0) return -1;
        if (rc > 0) {
            PyErr_Format(PyExc_OverflowError, "transfer field %U is not an int in [0, 2**128)", names[wide[i]]);
            return -1;
        }
        uint64_t lo = (uint64_t)v, hi = (uint64_t)(v >> 64);
        memcpy(out + 16 * i, &lo, 8);
        memcpy(out + 16 * i + 8, &hi, 8);
    }
    for (size_t i = 0; i < sizeof(narrow) / sizeof(narrow[0]); i++) {
        u128 v;
        int rc = attr_u128(t, narrow[i].name, &v);
        if (rc < 0) return -1;
        if (rc > 0 || (narrow[i].size < 16 && v >> (8 * narrow[i].size))) {
            PyErr_Format(PyExc_OverflowError, "transfer field %U does not fit in %d bytes",
                         names[narrow[i].name], narrow[i].size);
            return -1;
        }
        uint64_t low = (uint64_t)v;
        memcpy(out + narrow[i].offset, &low, (size_t)narrow[i].size);  /* little-endian host */
    }
    return 0;
}

static PyObject *
fast_pack_transfer(PyObject *Py_UNUSED(module), PyObject *t)
{
    PyObject *out = PyBytes_FromStringAndSize(NULL, 128);
    if (out == NULL) return NULL;
    if (pack_into(t, (unsigned char *)PyBytes_AS_STRING(out)) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static PyObject *
fast_pack_transfers(PyObject *Py_UNUSED(module), PyObject *transfers)
{
    PyObject *seq = PySequence_Fast(transfers, "pack_transfers needs a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyBytes_FromStringAndSize(NULL, 128 * n);
    if (out != NULL) {
        unsigned char *buf = (unsigned char *)PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (pack_into(PySequence_Fast_GET_ITEM(seq, i), buf + 128 * i) < 0) {
                Py_CLEAR(out);
                break;
            }
        }
    }
    Py_DECREF(seq);
    return out;
}

/* ------------------------------------------------------------------ shadow books */

/* shadow.py's ShadowBooks.apply, record by record, on the books' own dicts: the batch
 * writer's pass over every transfer it commits.  Names of the books' attributes and of
 * an account's balances are the Python class's; an account not seen yet is made by the
 * books' own `_account` (rare: its creation record is still in another emitter's slot). */

typedef struct {
    PyObject *books, *accounts, *open, *orphans, *touched;
    int track;
} Shadow;

enum { S_ACCOUNTS, S_OPEN, S_ORPHANS, S_TOUCHED, S_TRACK, S_ACCOUNT_METHOD, S_COUNT };
static const char *const SHADOW_TEXT[S_COUNT] = {"accounts", "open", "orphans", "touched", "track_balances",
                                                 "_account"};
static PyObject *shadow_names[S_COUNT];

static PyObject *
shadow_account(Shadow *sh, PyObject *key)
{
    PyObject *account;
    int rc = PyDict_GetItemRef(sh->accounts, key, &account);
    if (rc < 0) return NULL;
    if (rc == 0) return PyObject_CallMethodOneArg(sh->books, shadow_names[S_ACCOUNT_METHOD], key);
    if (PySet_Add(sh->touched, key) < 0) {
        Py_DECREF(account);
        return NULL;
    }
    return account;
}

static int
add_to(PyObject *obj, int name, PyObject *delta)
{
    PyObject *value = PyObject_GetAttr(obj, names[name]);
    if (value == NULL) return -1;
    PyObject *sum = PyNumber_Add(value, delta);
    Py_DECREF(value);
    if (sum == NULL) return -1;
    int rc = PyObject_SetAttr(obj, names[name], sum);
    Py_DECREF(sum);
    return rc;
}

/* _move: pending and posted deltas on the debit and credit accounts (None: no change). */
static int
shadow_move(Shadow *sh, PyObject *dr_key, PyObject *cr_key, PyObject *pending, PyObject *posted)
{
    PyObject *dr = shadow_account(sh, dr_key);
    if (dr == NULL) return -1;
    PyObject *cr = shadow_account(sh, cr_key);
    int rc = cr == NULL ? -1 : 0;
    if (rc == 0 && pending != NULL) {
        rc = add_to(dr, N_DEBITS_PENDING, pending);
        if (rc == 0) rc = add_to(cr, N_CREDITS_PENDING, pending);
    }
    if (rc == 0 && posted != NULL) {
        rc = add_to(dr, N_DEBITS_POSTED, posted);
        if (rc == 0) rc = add_to(cr, N_CREDITS_POSTED, posted);
    }
    Py_DECREF(dr);
    Py_XDECREF(cr);
    return rc;
}

static int shadow_apply(Shadow *sh, PyObject *record);

static int
shadow_open(Shadow *sh, PyObject *record, PyObject *tid, PyObject *amount, PyObject *dr, PyObject *cr)
{
    PyObject *entry = PyTuple_Pack(4, record, amount, dr, cr);
    if (entry == NULL) return -1;
    int rc = PyDict_SetItem(sh->open, tid, entry);
    Py_DECREF(entry);
    if (rc < 0) return -1;
    if (sh->track && shadow_move(sh, dr, cr, amount, NULL) < 0) return -1;
    PyObject *orphan;
    rc = PyDict_Pop(sh->orphans, tid, &orphan);
    if (rc <= 0) return rc;
    rc = shadow_apply(sh, orphan);
    Py_DECREF(orphan);
    return rc;
}

static int
shadow_resolve(Shadow *sh, PyObject *record, PyObject *pending_id, PyObject *amount, int post)
{
    PyObject *pending;
    int rc = PyDict_Pop(sh->open, pending_id, &pending);
    if (rc < 0) return -1;
    if (rc == 0) return PyDict_SetItem(sh->orphans, pending_id, record);
    if (sh->track) {
        if (!PyTuple_Check(pending) || PyTuple_GET_SIZE(pending) != 4) {
            Py_DECREF(pending);
            PyErr_SetString(PyExc_TypeError, "an open entry is (record, amount, debit key, credit key)");
            return -1;
        }
        PyObject *released = PyNumber_Negative(PyTuple_GET_ITEM(pending, 1));
        rc = released == NULL ? -1 : shadow_move(sh, PyTuple_GET_ITEM(pending, 2), PyTuple_GET_ITEM(pending, 3),
                                                 released, post ? amount : NULL);
        Py_XDECREF(released);
    }
    Py_DECREF(pending);
    return rc;
}

/* Apply one 128-byte record (a bytes object, kept as the stored record). */
static int
shadow_apply(Shadow *sh, PyObject *record)
{
    if (!PyBytes_Check(record) || PyBytes_GET_SIZE(record) != 128) {
        PyErr_SetString(PyExc_ValueError, "a transfer record is 128 bytes");
        return -1;
    }
    const unsigned char *r = (const unsigned char *)PyBytes_AS_STRING(record);
    uint16_t flags;
    memcpy(&flags, r + 118, 2);
    uint64_t lo, hi;
    memcpy(&lo, r + 48, 8);
    memcpy(&hi, r + 56, 8);
    PyObject *amount = from_u128((u128)hi << 64 | lo);
    if (amount == NULL) return -1;
    int rc;
    if (flags & PENDING) {
        PyObject *tid = PyBytes_FromStringAndSize((const char *)r, 16);
        PyObject *dr = PyBytes_FromStringAndSize((const char *)r + 16, 16);
        PyObject *cr = PyBytes_FromStringAndSize((const char *)r + 32, 16);
        rc = tid && dr && cr ? shadow_open(sh, record, tid, amount, dr, cr) : -1;
        Py_XDECREF(tid);
        Py_XDECREF(dr);
        Py_XDECREF(cr);
    } else if (flags & (POST | VOID)) {
        PyObject *pending_id = PyBytes_FromStringAndSize((const char *)r + 64, 16);
        rc = pending_id ? shadow_resolve(sh, record, pending_id, amount, flags & POST) : -1;
        Py_XDECREF(pending_id);
    } else if (sh->track) {
        PyObject *dr = PyBytes_FromStringAndSize((const char *)r + 16, 16);
        PyObject *cr = PyBytes_FromStringAndSize((const char *)r + 32, 16);
        rc = dr && cr ? shadow_move(sh, dr, cr, NULL, amount) : -1;
        Py_XDECREF(dr);
        Py_XDECREF(cr);
    } else {
        rc = 0;
    }
    Py_DECREF(amount);
    return rc;
}

static PyObject *
fast_shadow_apply_many(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "shadow_apply_many(books, blob)");
        return NULL;
    }
    Shadow sh = {.books = args[0]};
    PyObject **slots[] = {&sh.accounts, &sh.open, &sh.orphans, &sh.touched};
    PyObject *result = NULL, *track = NULL;
    Py_buffer blob = {.buf = NULL};
    for (int i = 0; i < 4; i++) {
        if ((*slots[i] = PyObject_GetAttr(sh.books, shadow_names[i])) == NULL) goto done;
    }
    if (!PyDict_Check(sh.accounts) || !PyDict_Check(sh.open) || !PyDict_Check(sh.orphans)
            || !PySet_Check(sh.touched)) {
        PyErr_SetString(PyExc_TypeError, "the books' accounts, open and orphans are dicts, touched a set");
        goto done;
    }
    if ((track = PyObject_GetAttr(sh.books, shadow_names[S_TRACK])) == NULL) goto done;
    if ((sh.track = PyObject_IsTrue(track)) < 0) goto done;
    if (PyObject_GetBuffer(args[1], &blob, PyBUF_SIMPLE) < 0) goto done;
    if (blob.len % 128) {
        PyErr_SetString(PyExc_ValueError, "a blob of transfer records is a multiple of 128 bytes");
        goto done;
    }
    for (Py_ssize_t offset = 0; offset < blob.len; offset += 128) {
        PyObject *record = PyBytes_FromStringAndSize((const char *)blob.buf + offset, 128);
        int rc = record == NULL ? -1 : shadow_apply(&sh, record);
        Py_XDECREF(record);
        if (rc < 0) goto done;
    }
    result = Py_NewRef(Py_None);
done:
    if (blob.buf != NULL) PyBuffer_Release(&blob);
    Py_XDECREF(track);
    for (int i = 0; i < 4; i++) Py_XDECREF(*slots[i]);
    return result;
}

/* ------------------------------------------------------------------ gather_records */

static uint64_t
le_at(const unsigned char *p, int size)
{
    uint64_t value = 0;
    for (int i = size - 1; i >= 0; i--) value = (value << 8) | p[i];
    return value;
}

/* gather_records(blob, offset, limit) -> (offset, records, transfers, blob, replies) */
static PyObject *
fast_gather_records(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer blob;
    Py_ssize_t offset, limit, start, records = 0, transfers = 0, out_len = 0;
    PyObject *replies = NULL, *out = NULL, *result = NULL;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "gather_records(blob, offset, limit)");
        return NULL;
    }
    offset = PyLong_AsSsize_t(args[1]);
    if (offset == -1 && PyErr_Occurred()) return NULL;
    limit = PyLong_AsSsize_t(args[2]);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    if (PyObject_GetBuffer(args[0], &blob, PyBUF_SIMPLE) < 0) return NULL;
    if (offset < 0) offset = 0;
    if ((replies = PyList_New(0)) == NULL) goto done;
    /* first pass: how far the run goes and how many transfer bytes it holds */
    start = offset;
    for (Py_ssize_t at = offset; at + 4 <= blob.len;) {
        const unsigned char *slot = (const unsigned char *)blob.buf + at + 4;
        Py_ssize_t length = (Py_ssize_t)le_at(slot - 4, 4);
        if (length < SLOT_HEAD + RECORD_HEAD || at + 4 + length > blob.len) break;
        const unsigned char *rec = slot + SLOT_HEAD;
        Py_ssize_t n_accounts = (Py_ssize_t)le_at(rec, 2), n = (Py_ssize_t)le_at(rec + 2, 2);
        int kind = rec[4];
        if (slot[4] & SLOT_MORE || n_accounts || (kind != KIND_PLAIN && kind != KIND_HELD_REPLY)) break;
        if (RECORD_HEAD + n * 128 > length - SLOT_HEAD) break;   /* short: the general path says why */
        if (records && transfers + n > limit) break;
        records++;
        transfers += n;
        out_len += n * 128;
        at += 4 + length;
        offset = at;
    }
    if ((out = PyBytes_FromStringAndSize(NULL, out_len)) == NULL) goto done;
    /* second pass: copy the transfers, collect the held replies */
    {
        char *dest = PyBytes_AS_STRING(out);
        for (Py_ssize_t at = start; at < offset;) {
            const unsigned char *slot = (const unsigned char *)blob.buf + at + 4;
            Py_ssize_t length = (Py_ssize_t)le_at(slot - 4, 4);
            const unsigned char *rec = slot + SLOT_HEAD;
            Py_ssize_t n = (Py_ssize_t)le_at(rec + 2, 2), end = SLOT_HEAD + RECORD_HEAD + n * 128;
            memcpy(dest, rec + RECORD_HEAD, (size_t)(n * 128));
            dest += n * 128;
            if (rec[4] == KIND_HELD_REPLY) {
                PyObject *reply = Py_BuildValue("(Ky#)", (unsigned long long)le_at(rec + 8, 8),
                                                (const char *)slot + end, length - end);
                if (reply == NULL || PyList_Append(replies, reply) < 0) {
                    Py_XDECREF(reply);
                    goto done;
                }
                Py_DECREF(reply);
            }
            at += 4 + length;
        }
    }
    result = Py_BuildValue("(nnnOO)", offset, records, transfers, out, replies);
done:
    PyBuffer_Release(&blob);
    Py_XDECREF(out);
    Py_XDECREF(replies);
    return result;
}

static PyMethodDef module_methods[] = {
    {"shadow_apply_many", FASTCALL(fast_shadow_apply_many),
     "shadow_apply_many(books, blob): ShadowBooks.apply for each 128-byte record of blob, in order"},
    {"gather_records", FASTCALL(fast_gather_records),
     "gather_records(blob, offset, limit) -> (offset, records, transfers, blob, replies): from a Ring.read_many "
     "blob, the run of whole plain and held-reply records (no accounts) at offset, up to limit transfers"},
    {"pack_transfer", (PyCFunction)fast_pack_transfer, METH_O,
     "pack_transfer(t) -> bytes: TigerBeetle's 128-byte transfer struct"},
    {"pack_transfers", (PyCFunction)fast_pack_transfers, METH_O,
     "pack_transfers(seq) -> bytes: the structs back to back"},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ module */

static int
fastpath_exec(PyObject *module)
{
#if PY_LITTLE_ENDIAN != 1
    PyErr_SetString(PyExc_ImportError, "the ledger fast path packs little-endian structs on a little-endian host");
    return -1;
#endif
    for (int i = 0; i < N_COUNT; i++) {
        if (names[i] == NULL && (names[i] = PyUnicode_InternFromString(NAME_TEXT[i])) == NULL) return -1;
    }
    for (int i = 0; i < S_COUNT; i++) {
        if (shadow_names[i] == NULL && (shadow_names[i] = PyUnicode_InternFromString(SHADOW_TEXT[i])) == NULL)
            return -1;
    }
    stored_account_prepare();
    if (PyType_Ready(&StoredType) < 0 || PyType_Ready(&StoredAccountType) < 0 || PyType_Ready(&EngineType) < 0
        || PyType_Ready(&LaneType) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "Stored", (PyObject *)&StoredType) < 0) return -1;
    if (PyModule_AddObjectRef(module, "StoredAccount", (PyObject *)&StoredAccountType) < 0) return -1;
    if (PyModule_AddObjectRef(module, "PairEngine", (PyObject *)&EngineType) < 0) return -1;
    return PyModule_AddObjectRef(module, "PacketLane", (PyObject *)&LaneType);
}

static PyModuleDef_Slot fastpath_slots[] = {
    {Py_mod_exec, fastpath_exec},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "connector.ledger._fastpath",
    .m_doc = "The embedded ledger's packet pair (reserve, post, void) and transfer packing in C.",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = fastpath_slots,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    return PyModuleDef_Init(&fastpath_module);
}
