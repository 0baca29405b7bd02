/*
 * The I/O thread's byte work in C: WebSocket frames in, BTP `ilp` envelopes in and out.
 *
 * Three sans-I/O functions on buffers, each a drop-in for a pure-Python reference that
 * stays in the tree and defines the behaviour (tests/transport/test_transport_wire.py
 * checks that both agree on random and malformed input, errors included):
 *
 *   parse_frames(view, start, end, expect_masked, max_message_size, messages)
 *       ws.parse_frames_py: every complete, unfragmented frame from view[start:end],
 *       header checks, unmasking in place, UTF-8 of text and close payloads; appends
 *       (opcode, payload slice of `view`) to `messages`; returns (pos, need, status, error).
 *   split_ilp_frame(view)
 *       btp_wire.split_ilp_frame_py: (frame type, request id, packet slice) of a BTP
 *       Message/Response whose only protocol data is `ilp`, else None.
 *   append_ilp_frame(out, frame_type, request_id, packet, mask_key)
 *       btp_wire.append_ilp_frame_py: one WebSocket binary frame holding that BTP frame,
 *       appended to the bytearray `out` (masked when `mask_key` is 4 bytes).
 *   ingress_records(messages, index, records, io_index, peer_index, conn_id, now_ns,
 *                   max_body, outstanding)
 *       btp_wire.ingress_records_py: the packet path's messages (a Prepare in a BTP
 *       Message, a Fulfill/Reject in a Response to one of `outstanding`) from
 *       messages[index:] become ingress records (connector/slots.py's INGRESS header and
 *       the packet) appended to `records`, up to the first message that is anything else.
 *   egress_frames(blob, offset, current, connections, open_state, now_ns, now, forward,
 *                 answer, soft_limit, dirty)
 *       btp_wire.egress_frames_py: the egress records in `blob` (as Ring.read_many returns
 *       them) from `offset` on that are the packet path's (a Prepare or a reply for an open
 *       connection) become frames appended to their connection's output, up to the first
 *       record that is anything else or the first connection past its soft limit.
 *
 * Nothing here keeps state between calls, so the module runs without the GIL: a caller's
 * buffers belong to the calling thread (docs/runtime.md), as in the Python versions.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { OP_CONTINUATION = 0x0, OP_TEXT = 0x1, OP_BINARY = 0x2, OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xA };
enum { CLOSE_PROTOCOL_ERROR = 1002, CLOSE_INVALID_PAYLOAD = 1007, CLOSE_MESSAGE_TOO_BIG = 1009 };
enum { STATUS_MORE = 0, STATUS_CLOSED = 1, STATUS_FRAGMENT = 2 };
enum { MAX_CONTROL_PAYLOAD = 125 };
enum { BTP_RESPONSE = 1, BTP_MESSAGE = 6 };

static const unsigned char ILP_ENTRY_HEAD[7] = {0x01, 0x01, 0x03, 'i', 'l', 'p', 0x00};

/* attribute names egress_frames reads, interned once */
#define WIRE_NAMES(X) X(state) X(peer) X(index) X(outstanding) X(writer) X(mask) X(out) X(dirty) \
    X(next_key) X(bounds) X(counts) X(sum)

typedef struct {
    PyObject *struct_error;
#define X(name) PyObject *str_##name;
    WIRE_NAMES(X)
#undef X
} wire_state;

static inline wire_state *
get_state(PyObject *module)
{
    return (wire_state *)PyModule_GetState(module);
}

/* ------------------------------------------------------------------ masking */

static void
xor_mask(unsigned char *data, Py_ssize_t n, const unsigned char key[4])
{
    uint32_t k32;
    uint64_t k64;
    Py_ssize_t i = 0;
    memcpy(&k32, key, 4);
    k64 = ((uint64_t)k32 << 32) | k32;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, data + i, 8);
        word ^= k64;
        memcpy(data + i, &word, 8);
    }
    for (; i < n; i++) data[i] ^= key[i & 3];
}

/* ------------------------------------------------------------------ parse_frames */

static int
valid_close_code(unsigned int code)
{
    if (code >= 3000 && code <= 4999) return 1;
    return code >= 1000 && code <= 1014 && code != 1004 && code != 1005 && code != 1006;
}

/* 0 if `data` is valid UTF-8 (as str(data, "utf-8") decides), 1 if not, -1 on another error. */
static int
invalid_utf8(const char *data, Py_ssize_t n)
{
    PyObject *text;
    if (n == 0) return 0;
    text = PyUnicode_DecodeUTF8(data, n, "strict");
    if (text != NULL) {
        Py_DECREF(text);
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        return 1;
    }
    return -1;
}

static PyObject *
parse_result(Py_ssize_t pos, Py_ssize_t need, int status, int code, PyObject *reason)
{
    PyObject *error, *result;
    if (reason == NULL && code) return NULL;  /* formatting the reason failed */
    if (code) {
        error = Py_BuildValue("(iN)", code, reason);
        if (error == NULL) return NULL;
    } else {
        error = Py_NewRef(Py_None);
    }
    result = Py_BuildValue("(nniN)", pos, need, status, error);
    return result;
}

#define FAIL(c, text) do { code = (c); reason = PyUnicode_FromString(text); goto done; } while (0)

static PyObject *
parse_frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer buffer;
    PyObject *view, *messages, *reason = NULL;
    Py_ssize_t start, end, pos, need = 0;
    unsigned long long max_message_size;
    int expect_masked, status = STATUS_MORE, code = 0;
    unsigned char *buf;
    (void)module;

    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "parse_frames(view, start, end, expect_masked, max_message_size, messages)");
        return NULL;
    }
    view = args[0];
    messages = args[5];
    if (!PyList_Check(messages)) {
        PyErr_SetString(PyExc_TypeError, "messages must be a list");
        return NULL;
    }
    start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    end = PyLong_AsSsize_t(args[2]);
    if (end == -1 && PyErr_Occurred()) return NULL;
    expect_masked = PyObject_IsTrue(args[3]);
    if (expect_masked < 0) return NULL;
    max_message_size = PyLong_AsUnsignedLongLong(args[4]);
    if (max_message_size == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (PyObject_GetBuffer(view, &buffer, PyBUF_WRITABLE) < 0) return NULL;
    if (start < 0 || end < start || end > buffer.len) {
        PyBuffer_Release(&buffer);
        PyErr_SetString(PyExc_ValueError, "start and end must satisfy 0 <= start <= end <= len(view)");
        return NULL;
    }
    buf = (unsigned char *)buffer.buf;
    pos = start;

    while (end - pos >= 2) {
        unsigned int b0 = buf[pos], b1 = buf[pos + 1], opcode = b0 & 0x0F;
        unsigned long long length = b1 & 0x7F;
        Py_ssize_t header = 2, total;
        int masked = (b1 & 0x80) != 0, control;
        if (length == 126) {
            if (end - pos < 4) break;
            length = ((unsigned long long)buf[pos + 2] << 8) | buf[pos + 3];
            header = 4;
        } else if (length == 127) {
            if (end - pos < 10) break;
            length = 0;
            for (int i = 0; i < 8; i++) length = (length << 8) | buf[pos + 2 + i];
            header = 10;
            if (length >> 63) FAIL(CLOSE_PROTOCOL_ERROR, "64-bit length with the top bit set");
        }
        if (masked) header += 4;
        /* ws.FrameParser._check_header, with no fragmented message in progress */
        if (b0 & 0x70) FAIL(CLOSE_PROTOCOL_ERROR, "reserved bits set without a negotiated extension");
        if (masked != expect_masked)
            FAIL(CLOSE_PROTOCOL_ERROR,
                 expect_masked ? "client frames must be masked" : "server frames must not be masked");
        control = opcode == OP_CLOSE || opcode == OP_PING || opcode == OP_PONG;
        if (control) {
            if (!(b0 & 0x80)) FAIL(CLOSE_PROTOCOL_ERROR, "fragmented control frame");
            if (length > MAX_CONTROL_PAYLOAD) FAIL(CLOSE_PROTOCOL_ERROR, "control frame payload over 125 bytes");
        } else if (opcode == OP_CONTINUATION) {
            FAIL(CLOSE_PROTOCOL_ERROR, "continuation frame without a message to continue");
        } else if (opcode == OP_TEXT || opcode == OP_BINARY) {
            if (length > max_message_size) {
                code = CLOSE_MESSAGE_TOO_BIG;
                reason = PyUnicode_FromFormat("message of %llu+ bytes exceeds %llu", length, max_message_size);
                goto done;
            }
            if (!(b0 & 0x80)) {  /* the first frame of a fragmented message: the caller's */
                status = STATUS_FRAGMENT;
                break;
            }
        } else {
            code = CLOSE_PROTOCOL_ERROR;
            reason = PyUnicode_FromFormat("unknown opcode 0x%x", opcode);
            goto done;
        }
        /* length <= max(125, max_message_size) here; a frame longer than the buffer waits */
        if ((unsigned long long)(end - pos - header) < length || end - pos < header) {
            if ((unsigned long long)PY_SSIZE_T_MAX - header < length) {
                PyErr_SetString(PyExc_OverflowError, "frame length does not fit in memory");
                PyBuffer_Release(&buffer);
                return NULL;
            }
            need = header + (Py_ssize_t)length;
            break;
        }
        total = header + (Py_ssize_t)length;
        {
            Py_ssize_t at = pos + header;
            PyObject *payload, *item;
            if (masked) xor_mask(buf + at, (Py_ssize_t)length, buf + at - 4);
            pos += total;
            need = 0;
            if (opcode == OP_CLOSE) {
                if (length == 1) FAIL(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload");
                if (length >= 2) {
                    unsigned int close_code = ((unsigned int)buf[at] << 8) | buf[at + 1];
                    int bad;
                    if (!valid_close_code(close_code)) {
                        code = CLOSE_PROTOCOL_ERROR;
                        reason = PyUnicode_FromFormat("invalid close code %u", close_code);
                        goto done;
                    }
                    bad = invalid_utf8((const char *)buf + at + 2, (Py_ssize_t)length - 2);
                    if (bad < 0) goto error;
                    if (bad) FAIL(CLOSE_INVALID_PAYLOAD, "close reason is not UTF-8");
                }
                status = STATUS_CLOSED;
            } else if (opcode == OP_TEXT) {
                int bad = invalid_utf8((const char *)buf + at, (Py_ssize_t)length);
                if (bad < 0) goto error;
                if (bad) FAIL(CLOSE_INVALID_PAYLOAD, "text message is not UTF-8");
            }
            payload = PySequence_GetSlice(view, at, at + (Py_ssize_t)length);
            if (payload == NULL) goto error;
            item = PyTuple_New(2);
            if (item == NULL) {
                Py_DECREF(payload);
                goto error;
            }
            PyTuple_SET_ITEM(item, 0, PyLong_FromLong(opcode));  /* a cached small int */
            PyTuple_SET_ITEM(item, 1, payload);
            if (PyList_Append(messages, item) < 0) {
                Py_DECREF(item);
                goto error;
            }
            Py_DECREF(item);
            if (status == STATUS_CLOSED) break;
        }
    }
done:
    PyBuffer_Release(&buffer);
    return parse_result(pos, need, status, code, reason);
error:
    PyBuffer_Release(&buffer);
    return NULL;
}

/* ------------------------------------------------------------------ split_ilp_frame */

/* connector.codec.oer.read_length: 0 and the length and next offset, or -1 (CodecError). */
static int
read_length(const unsigned char *p, Py_ssize_t size, Py_ssize_t offset, uint64_t *length, Py_ssize_t *next)
{
    unsigned int first, n;
    uint64_t value = 0;
    if (offset >= size) return -1;
    first = p[offset];
    if (first < 0x80) {
        *length = first;
        *next = offset + 1;
        return 0;
    }
    n = first & 0x7F;
    if (n == 0 || n > 8 || offset + 1 + (Py_ssize_t)n > size) return -1;
    for (unsigned int i = 0; i < n; i++) value = (value << 8) | p[offset + 1 + i];
    /* canonical: one byte only from 128 on, two only from 256 on, no leading zero byte */
    if (value < 0x80 || p[offset + 1] == 0) return -1;
    *length = value;
    *next = offset + 1 + n;
    return 0;
}

/* The offset of the packet in a BTP Message/Response whose only protocol data is `ilp`,
 * or -1 for any other bytes. */
static Py_ssize_t
ilp_packet_at(const unsigned char *p, Py_ssize_t size)
{
    Py_ssize_t at, packet_at;
    uint64_t length, packet_length;
    if (size < 13 || (p[0] != BTP_MESSAGE && p[0] != BTP_RESPONSE)) return -1;
    if (read_length(p, size, 5, &length, &at) < 0) return -1;
    if (length != (uint64_t)(size - at) || size - at < 7 || memcmp(p + at, ILP_ENTRY_HEAD, 7) != 0) return -1;
    if (read_length(p, size, at + 7, &packet_length, &packet_at) < 0) return -1;
    if (packet_length != (uint64_t)(size - packet_at)) return -1;
    return packet_at;
}

static inline unsigned long
request_id_at(const unsigned char *p)
{
    return ((unsigned long)p[1] << 24) | ((unsigned long)p[2] << 16) | ((unsigned long)p[3] << 8) | p[4];
}

static PyObject *
split_ilp_frame(PyObject *module, PyObject *view)
{
    Py_buffer buffer;
    const unsigned char *p;
    Py_ssize_t packet_at;
    unsigned int frame_type;
    unsigned long request_id;
    (void)module;

    if (PyObject_GetBuffer(view, &buffer, PyBUF_SIMPLE) < 0) return NULL;
    p = (const unsigned char *)buffer.buf;
    packet_at = ilp_packet_at(p, buffer.len);
    if (packet_at < 0) {
        PyBuffer_Release(&buffer);
        Py_RETURN_NONE;
    }
    frame_type = p[0];
    request_id = request_id_at(p);
    PyBuffer_Release(&buffer);
    {
        PyObject *packet = PySequence_GetSlice(view, packet_at, PY_SSIZE_T_MAX);
        if (packet == NULL) return NULL;
        return Py_BuildValue("(ikN)", frame_type, request_id, packet);
    }
}

/* ------------------------------------------------------------------ append_ilp_frame */

/* struct.pack's integer conversion for format `fmt` ('B' or 'I'), with its errors. */
static int
struct_uint(PyObject *module, PyObject *obj, char fmt, unsigned long long max, unsigned long long *out)
{
    PyObject *index;
    unsigned long long value = 0;
    long long small;
    int overflow = 0, bad = 0;
    if (!PyIndex_Check(obj)) {
        PyErr_SetString(get_state(module)->struct_error, "required argument is not an integer");
        return -1;
    }
    index = PyNumber_Index(obj);
    if (index == NULL) return -1;
    small = PyLong_AsLongLongAndOverflow(index, &overflow);
    if (small == -1 && PyErr_Occurred()) {
        Py_DECREF(index);
        return -1;
    }
    if (overflow < 0 || (overflow == 0 && small < 0)) {
        bad = 1;
    } else if (overflow > 0) {
        value = PyLong_AsUnsignedLongLong(index);
        if (value == (unsigned long long)-1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                Py_DECREF(index);
                return -1;
            }
            PyErr_Clear();
            bad = 1;
        }
    } else {
        value = (unsigned long long)small;
    }
    Py_DECREF(index);
    if (bad || value > max) {
        PyErr_Format(get_state(module)->struct_error, "'%c' format requires 0 <= number <= %llu", fmt, max);
        return -1;
    }
    *out = value;
    return 0;
}

static Py_ssize_t
put_length(unsigned char *p, uint64_t length)
{
    if (length < 0x80) {
        p[0] = (unsigned char)length;
        return 1;
    }
    {
        unsigned int n = 0;
        for (uint64_t rest = length; rest; rest >>= 8) n++;
        p[0] = (unsigned char)(0x80 | n);
        for (unsigned int i = 0; i < n; i++) p[1 + i] = (unsigned char)(length >> (8 * (n - 1 - i)));
        return 1 + n;
    }
}

/* Append to `out` one WebSocket binary frame holding a BTP frame whose only protocol data
 * is `ilp` = packet; masked with `key` (4 bytes) unless it is NULL.  0, or -1 on error. */
static int
append_frame(PyObject *out, unsigned int frame_type, unsigned long request_id,
             const unsigned char *packet, Py_ssize_t packet_len, const unsigned char *key)
{
    unsigned char head[14 + 5 + 9 + 7 + 9];  /* ws header + mask, envelope, contents length, entry, packet length */
    unsigned char btp[5 + 9 + 7 + 9];
    Py_ssize_t btp_len = 0, head_len = 0, payload_len, old_size;
    uint64_t contents;
    unsigned char length_bytes[9];
    Py_ssize_t length_len;
    char *dest;

    /* the BTP envelope: type, request id, contents length, the one `ilp` entry's head, packet length */
    length_len = put_length(length_bytes, (uint64_t)packet_len);
    contents = sizeof(ILP_ENTRY_HEAD) + (uint64_t)length_len + (uint64_t)packet_len;
    btp[btp_len++] = (unsigned char)frame_type;
    btp[btp_len++] = (unsigned char)(request_id >> 24);
    btp[btp_len++] = (unsigned char)(request_id >> 16);
    btp[btp_len++] = (unsigned char)(request_id >> 8);
    btp[btp_len++] = (unsigned char)request_id;
    btp_len += put_length(btp + btp_len, contents);
    memcpy(btp + btp_len, ILP_ENTRY_HEAD, sizeof(ILP_ENTRY_HEAD));
    btp_len += sizeof(ILP_ENTRY_HEAD);
    memcpy(btp + btp_len, length_bytes, (size_t)length_len);
    btp_len += length_len;
    /* the WebSocket header: FIN + binary, the payload length, the masking key */
    payload_len = btp_len + packet_len;
    head[head_len++] = 0x80 | OP_BINARY;
    if (payload_len < 126) {
        head[head_len++] = (unsigned char)((key ? 0x80 : 0) | payload_len);
    } else if (payload_len < 65536) {
        head[head_len++] = (unsigned char)((key ? 0x80 : 0) | 126);
        head[head_len++] = (unsigned char)(payload_len >> 8);
        head[head_len++] = (unsigned char)payload_len;
    } else {
        head[head_len++] = (unsigned char)((key ? 0x80 : 0) | 127);
        for (int i = 7; i >= 0; i--) head[head_len++] = (unsigned char)((uint64_t)payload_len >> (8 * i));
    }
    if (key) {
        memcpy(head + head_len, key, 4);
        head_len += 4;
    }
    old_size = PyByteArray_GET_SIZE(out);
    if (PyByteArray_Resize(out, old_size + head_len + payload_len) < 0) return -1;
    dest = PyByteArray_AS_STRING(out) + old_size;
    memcpy(dest, head, (size_t)head_len);
    memcpy(dest + head_len, btp, (size_t)btp_len);
    memcpy(dest + head_len + btp_len, packet, (size_t)packet_len);
    if (key) xor_mask((unsigned char *)dest + head_len, payload_len, key);
    return 0;
}

static PyObject *
append_ilp_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *out, *key_obj;
    Py_buffer packet, key = {0};
    unsigned long long frame_type, request_id;
    int done;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "append_ilp_frame(out, frame_type, request_id, packet, mask_key)");
        return NULL;
    }
    out = args[0];
    key_obj = args[4];
    if (!PyByteArray_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "out must be a bytearray");
        return NULL;
    }
    if (struct_uint(module, args[1], 'B', 0xFF, &frame_type) < 0) return NULL;
    if (struct_uint(module, args[2], 'I', 0xFFFFFFFFULL, &request_id) < 0) return NULL;
    if (PyObject_GetBuffer(args[3], &packet, PyBUF_SIMPLE) < 0) return NULL;
    if (key_obj != Py_None) {
        if (PyObject_GetBuffer(key_obj, &key, PyBUF_SIMPLE) < 0) {
            PyBuffer_Release(&packet);
            return NULL;
        }
        if (key.len != 4) {
            PyErr_SetString(PyExc_ValueError, "mask_key must be 4 bytes or None");
            PyBuffer_Release(&packet);
            PyBuffer_Release(&key);
            return NULL;
        }
    }
    done = append_frame(out, (unsigned int)frame_type, (unsigned long)request_id,
                        (const unsigned char *)packet.buf, packet.len, (const unsigned char *)key.buf);
    PyBuffer_Release(&packet);
    if (key.obj) PyBuffer_Release(&key);
    if (done < 0) return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ ingress_records */

enum { INGRESS_HEADER = 24, INGRESS_PREPARE = 1, INGRESS_REPLY = 2 };
enum { ILP_PREPARE = 12, ILP_FULFILL = 13, ILP_REJECT = 14 };

static void
put_le(unsigned char *p, uint64_t value, int size)
{
    for (int i = 0; i < size; i++) p[i] = (unsigned char)(value >> (8 * i));
}

/* What ingress_records does with one message: 1 a record was appended, 0 not the packet
 * path's (the caller's general path takes it), -1 error. */
static int
ingress_record(PyObject *item, PyObject *records, const uint64_t *fields, Py_ssize_t max_body,
               PyObject *outstanding)
{
    PyObject *payload, *record, *key;
    Py_buffer buffer;
    const unsigned char *p, *packet;
    Py_ssize_t packet_at, packet_len;
    unsigned long request_id;
    unsigned char *dest;
    int kind, done;

    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) return 0;
    if (!PyLong_Check(PyTuple_GET_ITEM(item, 0)) || PyLong_AsLong(PyTuple_GET_ITEM(item, 0)) != OP_BINARY) {
        if (PyErr_Occurred()) PyErr_Clear();
        return 0;
    }
    payload = PyTuple_GET_ITEM(item, 1);
    if (PyObject_GetBuffer(payload, &buffer, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        return 0;
    }
    p = (const unsigned char *)buffer.buf;
    packet_at = ilp_packet_at(p, buffer.len);
    if (packet_at < 0) {
        PyBuffer_Release(&buffer);
        return 0;
    }
    packet = p + packet_at;
    packet_len = buffer.len - packet_at;
    request_id = request_id_at(p);
    if (packet_len == 0 || packet_len > max_body) {
        PyBuffer_Release(&buffer);
        return 0;
    }
    if (p[0] == BTP_MESSAGE) {
        if (packet[0] != ILP_PREPARE) {
            PyBuffer_Release(&buffer);
            return 0;
        }
        kind = INGRESS_PREPARE;
    } else {
        int found;
        if (packet[0] != ILP_FULFILL && packet[0] != ILP_REJECT) {
            PyBuffer_Release(&buffer);
            return 0;
        }
        key = PyLong_FromUnsignedLong(request_id);
        if (key == NULL) {
            PyBuffer_Release(&buffer);
            return -1;
        }
        found = PyDict_Pop(outstanding, key, NULL);  /* a reply to one of our requests? */
        Py_DECREF(key);
        if (found <= 0) {
            PyBuffer_Release(&buffer);
            return found;
        }
        kind = INGRESS_REPLY;
    }
    record = PyBytes_FromStringAndSize(NULL, INGRESS_HEADER + packet_len);
    if (record == NULL) {
        PyBuffer_Release(&buffer);
        return -1;
    }
    dest = (unsigned char *)PyBytes_AS_STRING(record);
    /* connector/slots.py INGRESS "<BBHIIIQ": kind, io thread, peer, connection, request id, 0, ns */
    dest[0] = (unsigned char)kind;
    dest[1] = (unsigned char)fields[0];
    put_le(dest + 2, fields[1], 2);
    put_le(dest + 4, fields[2], 4);
    put_le(dest + 8, request_id, 4);
    put_le(dest + 12, 0, 4);
    put_le(dest + 16, fields[3], 8);
    memcpy(dest + INGRESS_HEADER, packet, (size_t)packet_len);
    PyBuffer_Release(&buffer);
    done = PyList_Append(records, record);
    Py_DECREF(record);
    return done < 0 ? -1 : 1;
}

static PyObject *
ingress_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *messages, *records, *outstanding;
    Py_ssize_t index, max_body;
    uint64_t fields[4];  /* io thread, peer, connection, ns */
    static const char formats[4] = {'B', 'H', 'I', 'Q'};
    static const unsigned long long limits[4] = {0xFF, 0xFFFF, 0xFFFFFFFFULL, 0xFFFFFFFFFFFFFFFFULL};

    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "ingress_records(messages, index, records, io_index, peer_index, "
                                         "conn_id, now_ns, max_body, outstanding)");
        return NULL;
    }
    messages = args[0];
    records = args[2];
    outstanding = args[8];
    if (!PyList_Check(messages) || !PyList_Check(records) || !PyDict_Check(outstanding)) {
        PyErr_SetString(PyExc_TypeError, "messages and records must be lists, outstanding a dict");
        return NULL;
    }
    index = PyLong_AsSsize_t(args[1]);
    if (index == -1 && PyErr_Occurred()) return NULL;
    for (int i = 0; i < 4; i++) {
        unsigned long long value;
        if (struct_uint(module, args[3 + i], formats[i], limits[i], &value) < 0) return NULL;
        fields[i] = value;
    }
    max_body = PyLong_AsSsize_t(args[7]);
    if (max_body == -1 && PyErr_Occurred()) return NULL;
    if (index < 0) index = 0;
    for (; index < PyList_GET_SIZE(messages); index++) {
        PyObject *item = PyList_GetItemRef(messages, index);
        int done;
        if (item == NULL) return NULL;
        done = ingress_record(item, records, fields, max_body, outstanding);
        Py_DECREF(item);
        if (done < 0) return NULL;
        if (done == 0) break;
    }
    return PyLong_FromSsize_t(index);
}

/* ------------------------------------------------------------------ egress_frames */

enum { EGRESS_HEADER = 24, EGRESS_PREPARE = 1, EGRESS_REPLY = 2, MAX_BOUNDS = 64 };

static uint64_t
get_le(const unsigned char *p, int size)
{
    uint64_t value = 0;
    for (int i = size - 1; i >= 0; i--) value = (value << 8) | p[i];
    return value;
}

/* A latency histogram as the I/O thread keeps it: `bounds` (seconds, ascending), `counts`
 * (a list one longer), `sum`; its bounds copied once per call. */
typedef struct {
    wire_state *names;
    PyObject *hist, *counts;
    double bounds[MAX_BOUNDS];
    Py_ssize_t n_bounds;
    double sum;
} histogram;

static int
histogram_open(histogram *h, wire_state *names, PyObject *hist)
{
    PyObject *bounds = PyObject_GetAttr(hist, names->str_bounds), *fast;
    h->names = names;
    h->hist = hist;
    h->sum = 0.0;
    h->counts = NULL;
    if (bounds == NULL) return -1;
    fast = PySequence_Fast(bounds, "histogram bounds must be a sequence");
    Py_DECREF(bounds);
    if (fast == NULL) return -1;
    h->n_bounds = PySequence_Fast_GET_SIZE(fast);
    if (h->n_bounds > MAX_BOUNDS) {
        PyErr_Format(PyExc_ValueError, "at most %d histogram bounds", MAX_BOUNDS);
        Py_DECREF(fast);
        return -1;
    }
    for (Py_ssize_t i = 0; i < h->n_bounds; i++) {
        h->bounds[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
        if (h->bounds[i] == -1.0 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    h->counts = PyObject_GetAttr(hist, names->str_counts);
    if (h->counts == NULL) return -1;
    if (!PyList_Check(h->counts) || PyList_GET_SIZE(h->counts) != h->n_bounds + 1) {
        PyErr_SetString(PyExc_ValueError, "histogram counts must be a list one longer than its bounds");
        Py_CLEAR(h->counts);
        return -1;
    }
    return 0;
}

/* counts[bisect_left(bounds, seconds)] += 1 (le: seconds <= bound), as `Histogram.observe` */
static int
histogram_observe(histogram *h, double seconds)
{
    Py_ssize_t lo = 0, hi = h->n_bounds;
    PyObject *one = PyLong_FromLong(1);
    int failed = 0;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (h->bounds[mid] < seconds) lo = mid + 1;
        else hi = mid;
    }
    /* only this thread writes the counts; PyList_SetItem locks the list against a scrape */
    PyObject *old = PyList_GetItemRef(h->counts, lo);
    PyObject *one_more = old == NULL ? NULL : PyNumber_Add(old, one);  /* one: an immortal small int */
    Py_XDECREF(old);
    if (one_more == NULL || PyList_SetItem(h->counts, lo, one_more) < 0) failed = 1;  /* steals one_more */
    if (failed) return -1;
    h->sum += seconds;
    return 0;
}

/* sum += what this call observed; counts released.  Keeps a pending exception. */
static int
histogram_close(histogram *h)
{
    int failed = 0;
    if (h->sum != 0.0) {
        PyObject *exc = PyErr_GetRaisedException();
        PyObject *sum = PyObject_GetAttr(h->hist, h->names->str_sum), *added = NULL, *delta = NULL;
        if (sum != NULL && (delta = PyFloat_FromDouble(h->sum)) != NULL && (added = PyNumber_Add(sum, delta)) != NULL)
            failed = PyObject_SetAttr(h->hist, h->names->str_sum, added) < 0;
        else
            failed = 1;
        Py_XDECREF(sum);
        Py_XDECREF(delta);
        Py_XDECREF(added);
        if (exc != NULL) {
            if (failed) PyErr_Clear();
            PyErr_SetRaisedException(exc);
        }
    }
    Py_CLEAR(h->counts);
    return failed ? -1 : 0;
}

/* What egress_frames does with one record: 1 framed, 0 not the packet path's (the
 * caller's general path takes it), -1 error.  *over_limit gets the connection (a new
 * reference) when its output passed the soft limit. */
static int
egress_frame(wire_state *names, const unsigned char *rec, Py_ssize_t length, PyObject *current, PyObject *connections,
             PyObject *open_state, uint64_t now_ns, PyObject *now, histogram *forward, histogram *answer,
             Py_ssize_t soft_limit, PyObject *dirty, PyObject **over_limit)
{
    PyObject *key, *conn = NULL, *attr = NULL, *writer = NULL, *mask_key = NULL, *out = NULL;
    Py_buffer key_buf = {0};
    int kind = rec[0], done = -1, found;
    unsigned long peer_index = (unsigned long)get_le(rec + 2, 2);
    unsigned long conn_id = (unsigned long)get_le(rec + 4, 4);
    unsigned long request_id = (unsigned long)get_le(rec + 8, 4);
    uint64_t entered_ns = get_le(rec + 16, 8);

    if (kind != EGRESS_PREPARE && kind != EGRESS_REPLY) return 0;
    key = PyLong_FromUnsignedLong(conn_id == 0 ? peer_index : conn_id);
    if (key == NULL) return -1;
    found = PyDict_GetItemRef(conn_id == 0 ? current : connections, key, &conn);
    Py_DECREF(key);
    if (found <= 0) return found;
    /* conn.state is OPEN and conn.peer.index == peer_index */
    if ((attr = PyObject_GetAttr(conn, names->str_state)) == NULL) goto finally;
    found = attr == open_state;
    Py_CLEAR(attr);
    if (!found) { done = 0; goto finally; }
    if ((attr = PyObject_GetAttr(conn, names->str_peer)) == NULL) goto finally;
    {
        PyObject *index = PyObject_GetAttr(attr, names->str_index);
        unsigned long value;
        Py_CLEAR(attr);
        if (index == NULL) goto finally;
        value = PyLong_AsUnsignedLong(index);
        Py_DECREF(index);
        if (value == (unsigned long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            done = 0;
            goto finally;
        }
        if (value != peer_index) { done = 0; goto finally; }
    }
    if (kind == EGRESS_PREPARE) {  /* outstanding[request_id] = now, unless the id is in use */
        if ((attr = PyObject_GetAttr(conn, names->str_outstanding)) == NULL) goto finally;
        if ((key = PyLong_FromUnsignedLong(request_id)) == NULL) goto finally;
        found = PyDict_Contains(attr, key);
        if (found == 0) found = PyDict_SetItem(attr, key, now) < 0 ? -1 : 0;
        else if (found > 0) done = 0;  /* reused while outstanding: the general path warns */
        Py_DECREF(key);
        Py_CLEAR(attr);
        if (found != 0) goto finally;
    }
    if (entered_ns) {
        double seconds = (double)(int64_t)(now_ns - entered_ns) * 1e-9;
        if (histogram_observe(kind == EGRESS_PREPARE ? forward : answer, seconds) < 0) goto finally;
    }
    /* the frame, masked with the writer's next key if it masks */
    if ((writer = PyObject_GetAttr(conn, names->str_writer)) == NULL) goto finally;
    if ((attr = PyObject_GetAttr(writer, names->str_mask)) == NULL) goto finally;
    found = PyObject_IsTrue(attr);
    Py_CLEAR(attr);
    if (found < 0) goto finally;
    if (found) {
        if ((mask_key = PyObject_CallMethodNoArgs(writer, names->str_next_key)) == NULL) goto finally;
        if (PyObject_GetBuffer(mask_key, &key_buf, PyBUF_SIMPLE) < 0) goto finally;
        if (key_buf.len != 4) {
            PyErr_SetString(PyExc_ValueError, "mask_key must be 4 bytes or None");
            goto finally;
        }
    }
    if ((out = PyObject_GetAttr(conn, names->str_out)) == NULL) goto finally;
    if (!PyByteArray_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "out must be a bytearray");
        goto finally;
    }
    if (append_frame(out, kind == EGRESS_PREPARE ? BTP_MESSAGE : BTP_RESPONSE, request_id, rec + EGRESS_HEADER,
                     length - EGRESS_HEADER, (const unsigned char *)key_buf.buf) < 0)
        goto finally;
    /* dirty: flushed at the end of the turn */
    if ((attr = PyObject_GetAttr(conn, names->str_dirty)) == NULL) goto finally;
    found = PyObject_IsTrue(attr);
    Py_CLEAR(attr);
    if (found < 0) goto finally;
    if (!found && (PyObject_SetAttr(conn, names->str_dirty, Py_True) < 0 || PyList_Append(dirty, conn) < 0))
        goto finally;
    if (PyByteArray_GET_SIZE(out) > soft_limit) {
        *over_limit = conn;
        conn = NULL;
    }
    done = 1;
finally:
    if (key_buf.obj) PyBuffer_Release(&key_buf);
    Py_XDECREF(mask_key);
    Py_XDECREF(writer);
    Py_XDECREF(out);
    Py_XDECREF(attr);
    Py_XDECREF(conn);
    return done;
}

static PyObject *
egress_frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *current, *connections, *open_state, *now, *dirty, *over_limit = NULL;
    Py_buffer blob;
    Py_ssize_t offset, soft_limit, frames = 0;
    unsigned long long now_ns;
    histogram forward, answer;
    int failed = 0;
    wire_state *names = get_state(module);

    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "egress_frames(blob, offset, current, connections, open_state, now_ns, "
                                         "now, forward, answer, soft_limit, dirty)");
        return NULL;
    }
    current = args[2];
    connections = args[3];
    open_state = args[4];
    now = args[6];
    dirty = args[10];
    if (!PyDict_Check(current) || !PyDict_Check(connections) || !PyList_Check(dirty)) {
        PyErr_SetString(PyExc_TypeError, "current and connections must be dicts, dirty a list");
        return NULL;
    }
    offset = PyLong_AsSsize_t(args[1]);
    if (offset == -1 && PyErr_Occurred()) return NULL;
    now_ns = PyLong_AsUnsignedLongLong(args[5]);
    if (now_ns == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    soft_limit = PyLong_AsSsize_t(args[9]);
    if (soft_limit == -1 && PyErr_Occurred()) return NULL;
    if (histogram_open(&forward, names, args[7]) < 0) {
        Py_XDECREF(forward.counts);
        return NULL;
    }
    if (histogram_open(&answer, names, args[8]) < 0) {
        Py_XDECREF(forward.counts);
        Py_XDECREF(answer.counts);
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &blob, PyBUF_SIMPLE) < 0) {
        histogram_close(&forward);
        histogram_close(&answer);
        return NULL;
    }
    if (offset < 0) offset = 0;
    while (offset + 4 <= blob.len && over_limit == NULL) {
        const unsigned char *at = (const unsigned char *)blob.buf + offset;
        Py_ssize_t length = (Py_ssize_t)get_le(at, 4);
        int done;
        if (length < EGRESS_HEADER || offset + 4 + length > blob.len) break;
        done = egress_frame(names, at + 4, length, current, connections, open_state, now_ns, now, &forward, &answer,
                            soft_limit, dirty, &over_limit);
        if (done < 0) { failed = 1; break; }
        if (done == 0) break;
        frames++;
        offset += 4 + length;
    }
    PyBuffer_Release(&blob);
    failed |= histogram_close(&forward) < 0;
    failed |= histogram_close(&answer) < 0;
    if (failed) {
        Py_XDECREF(over_limit);
        return NULL;
    }
    return Py_BuildValue("(nnN)", offset, frames, over_limit ? over_limit : Py_NewRef(Py_None));
}

/* ------------------------------------------------------------------ module */

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL
static PyMethodDef wire_methods[] = {
    {"parse_frames", FASTCALL(parse_frames),
     "parse_frames(view, start, end, expect_masked, max_message_size, messages) -> (pos, need, status, error)"},
    {"split_ilp_frame", (PyCFunction)split_ilp_frame, METH_O,
     "split_ilp_frame(view) -> (frame_type, request_id, packet) or None"},
    {"append_ilp_frame", FASTCALL(append_ilp_frame),
     "append_ilp_frame(out, frame_type, request_id, packet, mask_key) -> None"},
    {"egress_frames", FASTCALL(egress_frames),
     "egress_frames(blob, offset, current, connections, open_state, now_ns, now, forward, answer, soft_limit, dirty)"
     " -> (offset of the first record not taken, frames written, connection over its soft limit or None)"},
    {"ingress_records", FASTCALL(ingress_records),
     "ingress_records(messages, index, records, io_index, peer_index, conn_id, now_ns, max_body, outstanding)"
     " -> index of the first message not taken"},
    {NULL, NULL, 0, NULL},
};

static int
wire_exec(PyObject *module)
{
    wire_state *state = get_state(module);
    PyObject *struct_module = PyImport_ImportModule("struct");
    if (struct_module == NULL) return -1;
    state->struct_error = PyObject_GetAttrString(struct_module, "error");
    Py_DECREF(struct_module);
    if (state->struct_error == NULL) return -1;
#define X(name) if ((state->str_##name = PyUnicode_InternFromString(#name)) == NULL) return -1;
    WIRE_NAMES(X)
#undef X
    if (PyModule_AddIntConstant(module, "STATUS_MORE", STATUS_MORE) < 0) return -1;
    if (PyModule_AddIntConstant(module, "STATUS_CLOSED", STATUS_CLOSED) < 0) return -1;
    return PyModule_AddIntConstant(module, "STATUS_FRAGMENT", STATUS_FRAGMENT);
}

static int
wire_traverse(PyObject *module, visitproc visit, void *arg)
{
    Py_VISIT(get_state(module)->struct_error);
#define X(name) Py_VISIT(get_state(module)->str_##name);
    WIRE_NAMES(X)
#undef X
    return 0;
}

static int
wire_clear(PyObject *module)
{
    Py_CLEAR(get_state(module)->struct_error);
#define X(name) Py_CLEAR(get_state(module)->str_##name);
    WIRE_NAMES(X)
#undef X
    return 0;
}

static void
wire_free(void *module)
{
    wire_clear((PyObject *)module);
}

static PyModuleDef_Slot wire_slots[] = {
    {Py_mod_exec, wire_exec},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef wire_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "connector.transport._wire",
    .m_doc = "WebSocket frame parsing and BTP ilp envelopes in C (references: ws.py, btp_wire.py).",
    .m_size = sizeof(wire_state),
    .m_methods = wire_methods,
    .m_slots = wire_slots,
    .m_traverse = wire_traverse,
    .m_clear = wire_clear,
    .m_free = wire_free,
};

PyMODINIT_FUNC
PyInit__wire(void)
{
    return PyModuleDef_Init(&wire_module);
}
