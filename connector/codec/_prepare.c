/* An ILP Prepare's structure checked in one pass, in C: the worker's first step on every
 * packet.
 *
 * `prepare_layout(buffer)` answers `(base, destination_start, data_at, expires_at_ms)`
 * for a Prepare that ilp.py's `_prepare_layout` plus `decode_timestamp_ms` would accept,
 * or None for anything else, and then the Python reference runs and raises the precise
 * CodecError (or accepts what this stricter pass left to it).  A test compares the two on
 * random and mutated packets (tests/codec/test_codec_prepare_c.py).
 *
 * Checked (RFC-0027 / RFC-0030): type 12; canonical length prefixes (one or two length
 * bytes: the only ones a packet of at most 32,767 data bytes needs); the envelope fills
 * the buffer; UInt64 amount; a 17-digit timestamp naming a real date (years 1-9999) and
 * time; 32-byte condition; destination an ILP address (scheme, dot-separated segments of
 * [A-Za-z0-9_~-], at most 1023 bytes); data at most 32,767 bytes, ending the packet.
 *
 * `prepare_fields` answers in the same cases with what the worker reads of a Prepare, and
 * `write_prepare_fields` writes the forwarded amount and expiry in place (ilp.py's
 * `read_prepare` and `write_prepare`, which fall back on the Python codec);
 * `fulfillment_of` reads a Fulfill's fulfillment (`read_fulfillment`).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PREPARE 12
#define FULFILL 13
#define TIMESTAMP_LENGTH 17
#define CONDITION_LENGTH 32
#define EXPIRY_AT 8
#define CONDITION_AT (EXPIRY_AT + TIMESTAMP_LENGTH)
#define DESTINATION_AT (CONDITION_AT + CONDITION_LENGTH)
#define MAX_ADDRESS_LENGTH 1023
#define MAX_DATA_LENGTH 32767
#define MS_PER_DAY 86400000LL

/* A canonical length prefix at p[offset]: the length and the offset after it, or -1. */
static Py_ssize_t
read_length(const unsigned char *p, Py_ssize_t size, Py_ssize_t offset, Py_ssize_t *next)
{
    if (offset >= size) return -1;
    unsigned char first = p[offset];
    if (first < 0x80) {
        *next = offset + 1;
        return first;
    }
    if (first == 0x81 && offset + 2 <= size && p[offset + 1] >= 0x80) {
        *next = offset + 2;
        return p[offset + 1];
    }
    if (first == 0x82 && offset + 3 <= size) {
        Py_ssize_t length = (Py_ssize_t)p[offset + 1] << 8 | p[offset + 2];
        if (length < 0x100) return -1;
        *next = offset + 3;
        return length;
    }
    return -1;
}

static int
digits(const unsigned char *p, int n, int *out)
{
    int value = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        value = value * 10 + (p[i] - '0');
    }
    *out = value;
    return 0;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm). */
static long long
days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* YYYYMMDDHHMMSSfff as ms since the epoch; 0 on success, -1 not a valid timestamp. */
static int
timestamp_ms(const unsigned char *p, long long *out)
{
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int year, month, day, hour, minute, second, milli;
    if (digits(p, 4, &year) || digits(p + 4, 2, &month) || digits(p + 6, 2, &day) || digits(p + 8, 2, &hour)
            || digits(p + 10, 2, &minute) || digits(p + 12, 2, &second) || digits(p + 14, 3, &milli))
        return -1;
    if (year < 1 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return -1;
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > month_days[month - 1] + (month == 2 && leap)) return -1;
    *out = days_from_civil(year, month, day) * MS_PER_DAY + hour * 3600000LL + minute * 60000LL
           + second * 1000LL + milli;
    return 0;
}

static int
segment_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '~'
           || c == '-';
}

/* address.py's pattern: a scheme, then one or more "." + [A-Za-z0-9_~-]+. */
static int
valid_address(const unsigned char *p, Py_ssize_t n)
{
    static const char *const schemes[] = {"g", "private", "example", "peer", "self", "test", "test1", "test2",
                                          "test3", "local"};
    if (n > MAX_ADDRESS_LENGTH) return 0;
    Py_ssize_t dot = 0;
    while (dot < n && p[dot] != '.') dot++;
    if (dot == n) return 0;
    int known = 0;
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]) && !known; i++) {
        known = strlen(schemes[i]) == (size_t)dot && memcmp(schemes[i], p, (size_t)dot) == 0;
    }
    if (!known) return 0;
    Py_ssize_t segment = 0;
    for (Py_ssize_t i = dot + 1; i < n; i++) {
        if (p[i] == '.') {
            if (segment == 0) return 0;
            segment = 0;
        } else if (segment_char(p[i])) {
            segment++;
        } else {
            return 0;
        }
    }
    return segment > 0;
}

typedef struct {
    Py_ssize_t base, destination_start, data_at;
    long long expires_ms;
} Layout;

/* 0 and the layout for a Prepare the Python codec accepts; -1 for anything else. */
static int
parse_prepare(const unsigned char *p, Py_ssize_t size, Layout *out)
{
    Py_ssize_t base, destination_start, data_start;
    if (size < 2 || p[0] != PREPARE) return -1;
    Py_ssize_t content = read_length(p, size, 1, &base);
    if (content < 0 || base + content != size || base + DESTINATION_AT > size) return -1;
    if (timestamp_ms(p + base + EXPIRY_AT, &out->expires_ms) < 0) return -1;
    Py_ssize_t destination_length = read_length(p, size, base + DESTINATION_AT, &destination_start);
    if (destination_length < 0) return -1;
    Py_ssize_t data_at = destination_start + destination_length;
    if (data_at > size || !valid_address(p + destination_start, destination_length)) return -1;
    Py_ssize_t data_length = read_length(p, size, data_at, &data_start);
    if (data_length < 0 || data_start + data_length != size || data_length > MAX_DATA_LENGTH) return -1;
    out->base = base;
    out->destination_start = destination_start;
    out->data_at = data_at;
    return 0;
}

static PyObject *
prepare_layout(PyObject *Py_UNUSED(module), PyObject *buffer)
{
    Py_buffer view;
    Layout layout;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *result = parse_prepare(view.buf, view.len, &layout) < 0
        ? Py_NewRef(Py_None)
        : Py_BuildValue("(nnnL)", layout.base, layout.destination_start, layout.data_at, layout.expires_ms);
    PyBuffer_Release(&view);
    return result;
}

static uint64_t
read_u64_be(const unsigned char *p)
{
    uint64_t value = 0;
    for (int i = 0; i < 8; i++) value = value << 8 | p[i];
    return value;
}

/* The worker's read of a Prepare: everything it decides on, in one call. */
static PyObject *
prepare_fields(PyObject *Py_UNUSED(module), PyObject *buffer)
{
    Py_buffer view;
    Layout layout;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *p = view.buf;
    PyObject *result;
    if (parse_prepare(p, view.len, &layout) < 0) {
        result = Py_NewRef(Py_None);
    } else {
        /* The address check admitted ASCII only. */
        result = Py_BuildValue("(nKLNN)", layout.base, (unsigned long long)read_u64_be(p + layout.base),
                               layout.expires_ms,
                               PyBytes_FromStringAndSize((const char *)p + layout.base + CONDITION_AT,
                                                         CONDITION_LENGTH),
                               PyUnicode_DecodeASCII((const char *)p + layout.destination_start,
                                                     layout.data_at - layout.destination_start, NULL));
    }
    PyBuffer_Release(&view);
    return result;
}

/* `fulfillment_of(buffer)`: the 32-byte fulfillment of a Fulfill the Python codec accepts
 * (type 13, canonical lengths, data of at most 32,767 bytes ending the packet), or None. */
static PyObject *
fulfillment_of(PyObject *Py_UNUSED(module), PyObject *buffer)
{
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *p = view.buf;
    Py_ssize_t size = view.len, base, data_start;
    PyObject *result = NULL;
    if (size >= 2 && p[0] == FULFILL) {
        Py_ssize_t content = read_length(p, size, 1, &base);
        if (content >= 0 && base + content == size && base + CONDITION_LENGTH <= size) {
            Py_ssize_t data_length = read_length(p, size, base + CONDITION_LENGTH, &data_start);
            if (data_length >= 0 && data_start + data_length == size && data_length <= MAX_DATA_LENGTH)
                result = PyBytes_FromStringAndSize((const char *)p + base, CONDITION_LENGTH);
        }
    }
    PyBuffer_Release(&view);
    return result != NULL || PyErr_Occurred() ? result : Py_NewRef(Py_None);
}

/* A proleptic Gregorian date from days since 1970-01-01 (Howard Hinnant's algorithm). */
static void
civil_from_days(long long days, int *year, int *month, int *day)
{
    days += 719468;
    long long era = (days >= 0 ? days : days - 146096) / 146097;
    long long doe = days - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    *day = (int)(doy - (153 * mp + 2) / 5 + 1);
    *month = (int)(mp < 10 ? mp + 3 : mp - 9);
    *year = (int)(yoe + era * 400 + (*month <= 2));
}

static void
put_digits(unsigned char *p, int n, long long value)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (unsigned char)('0' + value % 10);
        value /= 10;
    }
}

/* `write_prepare_fields(buffer, base, amount, expires_at_ms)`: the forwarded amount and
 * expiry written in place.  True when written; False, with nothing written, when an
 * argument is out of range or the buffer is read-only (the Python codec then raises). */
static PyObject *
write_prepare_fields(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "write_prepare_fields(buffer, base, amount, expires_at_ms)");
        return NULL;
    }
    Py_ssize_t base = PyLong_AsSsize_t(args[1]);
    if (base == -1 && PyErr_Occurred()) return NULL;
    if (!PyLong_CheckExact(args[2]) || !PyLong_CheckExact(args[3])) Py_RETURN_FALSE;
    int overflow;
    unsigned long long amount = PyLong_AsUnsignedLongLong(args[2]);
    if (amount == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    long long expires_ms = PyLong_AsLongLongAndOverflow(args[3], &overflow);
    if (overflow || (expires_ms == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    long long days = expires_ms >= 0 ? expires_ms / MS_PER_DAY : -((-expires_ms + MS_PER_DAY - 1) / MS_PER_DAY);
    long long ms_of_day = expires_ms - days * MS_PER_DAY;
    if (days < days_from_civil(1, 1, 1) || days > days_from_civil(9999, 12, 31)) Py_RETURN_FALSE;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    if (base < 0 || base + DESTINATION_AT > view.len) {
        PyBuffer_Release(&view);
        Py_RETURN_FALSE;
    }
    unsigned char *p = (unsigned char *)view.buf + base;
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(amount & 0xff);
        amount >>= 8;
    }
    int year, month, day;
    civil_from_days(days, &year, &month, &day);
    unsigned char *stamp = p + EXPIRY_AT;
    put_digits(stamp, 4, year);
    put_digits(stamp + 4, 2, month);
    put_digits(stamp + 6, 2, day);
    put_digits(stamp + 8, 2, ms_of_day / 3600000);
    put_digits(stamp + 10, 2, ms_of_day / 60000 % 60);
    put_digits(stamp + 12, 2, ms_of_day / 1000 % 60);
    put_digits(stamp + 14, 3, ms_of_day % 1000);
    PyBuffer_Release(&view);
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"prepare_layout", (PyCFunction)prepare_layout, METH_O,
     "prepare_layout(buffer) -> (base, destination_start, data_at, expires_at_ms) for a well-formed "
     "ILP Prepare, or None (the Python codec then decides, with its precise error)"},
    {"prepare_fields", (PyCFunction)prepare_fields, METH_O,
     "prepare_fields(buffer) -> (base, amount, expires_at_ms, condition, destination) for a well-formed "
     "ILP Prepare, or None"},
    {"fulfillment_of", (PyCFunction)fulfillment_of, METH_O,
     "fulfillment_of(buffer) -> the 32-byte fulfillment of a well-formed ILP Fulfill, or None"},
    {"write_prepare_fields", (PyCFunction)(void (*)(void))write_prepare_fields, METH_FASTCALL,
     "write_prepare_fields(buffer, base, amount, expires_at_ms) -> True, or False with nothing written"},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "connector.codec._prepare",
    .m_doc = "An ILP Prepare's structure checked in one pass (ilp.py's PrepareView uses it first).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__prepare(void)
{
    return PyModuleDef_Init(&module);
}
