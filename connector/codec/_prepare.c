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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PREPARE 12
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

static PyObject *
prepare_layout(PyObject *Py_UNUSED(module), PyObject *buffer)
{
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *p = view.buf;
    Py_ssize_t size = view.len, base, destination_start, data_start;
    long long expires_ms;
    PyObject *result = Py_None;
    if (size < 2 || p[0] != PREPARE) goto done;
    Py_ssize_t content = read_length(p, size, 1, &base);
    if (content < 0 || base + content != size || base + DESTINATION_AT > size) goto done;
    if (timestamp_ms(p + base + EXPIRY_AT, &expires_ms) < 0) goto done;
    Py_ssize_t destination_length = read_length(p, size, base + DESTINATION_AT, &destination_start);
    if (destination_length < 0) goto done;
    Py_ssize_t data_at = destination_start + destination_length;
    if (data_at > size || !valid_address(p + destination_start, destination_length)) goto done;
    Py_ssize_t data_length = read_length(p, size, data_at, &data_start);
    if (data_length < 0 || data_start + data_length != size || data_length > MAX_DATA_LENGTH) goto done;
    result = Py_BuildValue("(nnnL)", base, destination_start, data_at, expires_ms);
    PyBuffer_Release(&view);
    return result;
done:
    PyBuffer_Release(&view);
    return Py_NewRef(result);
}

static PyMethodDef methods[] = {
    {"prepare_layout", (PyCFunction)prepare_layout, METH_O,
     "prepare_layout(buffer) -> (base, destination_start, data_at, expires_at_ms) for a well-formed "
     "ILP Prepare, or None (the Python codec then decides, with its precise error)"},
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
