/* Kite binary frame -> JSON array of ticks, in one pass, for the holder's hot path.
 *
 * The output, once parsed, equals the official client's ticks (KiteTicker._parse_binary) with
 * datetimes as ISO-8601 strings in IST (+05:30), plus "is_mock": true when asked. Prices are
 * the same IEEE divisions the official client does, printed with Python's own repr, so every
 * number parses back to the identical float. Any malformed frame returns None and the caller
 * falls back to the pure-Python decoder, which reproduces the official client's behaviour.
 *
 * The frame comes from the network, so it is validated before anything is allocated, and memory
 * grows with the packets actually present, never with the count the header claims. The JSON is
 * built without the GIL (only plain C and PyMem_Raw* run in between), so the holder's event loop
 * keeps running on the other core while a 3,000-packet frame is encoded.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The output buffer, and a one-entry cache of the last time printed (a frame's packets share
 * seconds); one per call, so concurrent calls without the GIL share nothing. */
typedef struct {
    char *buf;
    size_t len, cap;
    uint32_t time_epoch;
    int time_len;
    char time_text[40];
} Out;

static int out_reserve(Out *o, size_t extra) {
    if (o->len + extra <= o->cap) return 0;
    size_t cap = o->cap * 2 + extra;
    char *buf = PyMem_RawRealloc(o->buf, cap);
    if (buf == NULL) return -1;
    o->buf = buf;
    o->cap = cap;
    return 0;
}

static int out_str(Out *o, const char *s, size_t n) {
    if (out_reserve(o, n) < 0) return -1;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return 0;
}

#define LIT(o, s) out_str((o), (s), sizeof(s) - 1)

static int out_uint(Out *o, uint32_t v) {
    char tmp[10];
    int i = 10;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return out_str(o, tmp + i, (size_t)(10 - i));
}

#include "_fastdouble.h"

static int out_double(Out *o, double v) {
    /* Python prints the shortest text that parses back to the same double; this prints 15
     * significant digits when they do, else 17, which always do (`fast_double`, with
     * snprintf for exponents and anything it declines). The value parsed back is identical
     * either way. PyOS_double_to_string would need the GIL. snprintf and strtod follow
     * LC_NUMERIC, which Python leaves at "C". A ".0" keeps integral values floats, as Python's
     * repr does. */
    char s[40];
    int n = fast_double(s, v);
    if (n > 0) return out_str(o, s, (size_t)n);
    n = snprintf(s, sizeof s - 2, "%.15g", v);
    if (n > 0 && n < (int)sizeof s - 2 && strtod(s, NULL) != v)
        n = snprintf(s, sizeof s - 2, "%.17g", v);
    if (n < 0 || n >= (int)sizeof s - 2) return -1;
    if (strpbrk(s, ".eEni") == NULL) {
        s[n++] = '.';
        s[n++] = '0';
    }
    return out_str(o, s, (size_t)n);
}

/* A price is an integer over a power of ten (100, 10^4, 10^7 by segment). Its exact decimal
 * has at most 10 significant digits, so it parses back to the very double the division gives
 * and is Python's shortest repr too: print it directly instead of running dtoa. Python switches
 * to exponent notation below 1e-4, so those few values go through repr. */
static int out_price(Out *o, uint32_t v, double div) {
    int decimals = div == 100.0 ? 2 : div == 10000.0 ? 4 : 7;
    uint32_t scale = decimals == 2 ? 100u : decimals == 4 ? 10000u : 10000000u;
    if (v != 0 && decimals == 7 && v < 1000) return out_double(o, v / div);
    if (out_uint(o, v / scale) < 0) return -1;
    char frac[8];
    uint32_t r = v % scale;
    for (int i = decimals - 1; i >= 0; i--) {
        frac[i] = (char)('0' + r % 10);
        r /= 10;
    }
    int n = decimals;
    while (n > 1 && frac[n - 1] == '0') n--;
    if (LIT(o, ".") < 0) return -1;
    return out_str(o, frac, (size_t)n);
}

static int out_time(Out *o, uint32_t epoch) {
    /* datetime.fromtimestamp(epoch, IST).isoformat(), cached per call in `o`. */
    if (o->time_len == 0 || epoch != o->time_epoch) {
        time_t t = (time_t)epoch + 19800;
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL) return LIT(o, "null");
        int n = snprintf(o->time_text, sizeof o->time_text,
                         "\"%04d-%02d-%02dT%02d:%02d:%02d+05:30\"", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        if (n < 0 || n >= (int)sizeof o->time_text) return -1;
        o->time_len = n;
        o->time_epoch = epoch;
    }
    return out_str(o, o->time_text, (size_t)o->time_len);
}

static inline uint32_t u32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint16_t u16(const unsigned char *p) {
    return (uint16_t)((p[0] << 8) | p[1]);
}

static double divisor_of(uint32_t token) {
    switch (token & 0xFF) {
        case 3: return 10000000.0;
        case 6: case 12: return 10000.0;
        default: return 100.0;
    }
}

/* "change": the official client's (last - close) * 100 / close, or the integer 0. */
static int out_change(Out *o, double last, double close) {
    if (close == 0) return LIT(o, "0");
    return out_double(o, (last - close) * 100 / close);
}

static int head(Out *o, uint32_t token, const char *mode, uint32_t last, double div) {
    if (LIT(o, "{\"tradable\":") < 0) return -1;
    if (((token & 0xFF) == 9 ? LIT(o, "false") : LIT(o, "true")) < 0) return -1;
    if (LIT(o, ",\"mode\":\"") < 0 || out_str(o, mode, strlen(mode)) < 0) return -1;
    if (LIT(o, "\",\"instrument_token\":") < 0 || out_uint(o, token) < 0) return -1;
    if (LIT(o, ",\"last_price\":") < 0 || out_price(o, last, div) < 0) return -1;
    return 0;
}

static int ohlc(Out *o, const unsigned char *p, double div, int index_layout) {
    /* Tradable packets: open, high, low, close. Index packets: high, low, open, close. */
    static const char *tradable[] = {"\"open\":", ",\"high\":", ",\"low\":", ",\"close\":"};
    static const char *index[] = {"\"high\":", ",\"low\":", ",\"open\":", ",\"close\":"};
    const char **names = index_layout ? index : tradable;
    if (LIT(o, ",\"ohlc\":{") < 0) return -1;
    for (int i = 0; i < 4; i++) {
        if (out_str(o, names[i], strlen(names[i])) < 0) return -1;
        if (out_price(o, u32(p + 4 * i), div) < 0) return -1;
    }
    return LIT(o, "}");
}

static int quote_fields(Out *o, const unsigned char *p, double div) {
    static const char *names[] = {",\"last_traded_quantity\":", ",\"average_traded_price\":",
                                  ",\"volume_traded\":", ",\"total_buy_quantity\":",
                                  ",\"total_sell_quantity\":"};
    for (int i = 0; i < 5; i++) {
        if (out_str(o, names[i], strlen(names[i])) < 0) return -1;
        int rc = i == 1 ? out_price(o, u32(p + 12), div) : out_uint(o, u32(p + 8 + 4 * i));
        if (rc < 0) return -1;
    }
    if (ohlc(o, p + 28, div, 0) < 0) return -1;
    if (LIT(o, ",\"change\":") < 0) return -1;
    return out_change(o, u32(p + 4) / div, u32(p + 40) / div);
}

static int depth(Out *o, const unsigned char *p, double div) {
    if (LIT(o, ",\"depth\":{\"buy\":[") < 0) return -1;
    for (int i = 0; i < 10; i++) {
        const unsigned char *e = p + 64 + 12 * i;
        if (i == 5 && LIT(o, "],\"sell\":[") < 0) return -1;
        if (i % 5 && LIT(o, ",") < 0) return -1;
        if (LIT(o, "{\"quantity\":") < 0 || out_uint(o, u32(e)) < 0) return -1;
        if (LIT(o, ",\"price\":") < 0 || out_price(o, u32(e + 4), div) < 0) return -1;
        if (LIT(o, ",\"orders\":") < 0 || out_uint(o, u16(e + 8)) < 0) return -1;
        if (LIT(o, "}") < 0) return -1;
    }
    return LIT(o, "]}");
}

static int full_fields(Out *o, const unsigned char *p) {
    if (LIT(o, ",\"last_trade_time\":") < 0 || out_time(o, u32(p + 44)) < 0) return -1;
    if (LIT(o, ",\"oi\":") < 0 || out_uint(o, u32(p + 48)) < 0) return -1;
    if (LIT(o, ",\"oi_day_high\":") < 0 || out_uint(o, u32(p + 52)) < 0) return -1;
    if (LIT(o, ",\"oi_day_low\":") < 0 || out_uint(o, u32(p + 56)) < 0) return -1;
    if (LIT(o, ",\"exchange_timestamp\":") < 0 || out_time(o, u32(p + 60)) < 0) return -1;
    return 0;
}

static int packet(Out *o, const unsigned char *p, uint16_t len) {
    uint32_t token = u32(p);
    double div = divisor_of(token);
    double last = u32(p + 4) / div;
    switch (len) {
        case 8:
            return head(o, token, "ltp", u32(p + 4), div);
        case 28: case 32:
            if (head(o, token, len == 28 ? "quote" : "full", u32(p + 4), div) < 0) return -1;
            if (ohlc(o, p + 8, div, 1) < 0 || LIT(o, ",\"change\":") < 0) return -1;
            if (out_change(o, last, u32(p + 20) / div) < 0) return -1;
            if (len == 32 && (LIT(o, ",\"exchange_timestamp\":") < 0 || out_time(o, u32(p + 28)) < 0))
                return -1;
            return 0;
        case 44:
            if (head(o, token, "quote", u32(p + 4), div) < 0) return -1;
            return quote_fields(o, p, div);
        default: /* 184 */
            if (head(o, token, "full", u32(p + 4), div) < 0 || quote_fields(o, p, div) < 0)
                return -1;
            if (full_fields(o, p) < 0) return -1;
            return depth(o, p, div);
    }
}

/* Typical JSON bytes per packet kind; the buffer grows past them when needed. */
static size_t json_estimate(uint16_t len) {
    switch (len) {
        case 8: return 100;
        case 28: case 32: return 260;
        case 44: return 420;
        default: return 760;
    }
}

static int known_length(uint16_t len) {
    return len == 8 || len == 28 || len == 32 || len == 44 || len == 184;
}

/* Check the frame's structure and count its decodable packets, touching only bytes inside the
 * frame. Every packet takes at least 6 bytes, so a claimed count cannot make this loop (or any
 * allocation) bigger than the frame. Returns -1 when malformed (the Python path decides). */
static Py_ssize_t validate(const unsigned char *data, Py_ssize_t size, size_t *estimate) {
    if (size < 2) return -1;
    uint16_t count = u16(data);
    Py_ssize_t pos = 2, known = 0;
    *estimate = 2;
    for (uint16_t i = 0; i < count; i++) {
        if (pos + 2 > size) return -1;
        uint16_t len = u16(data + pos);
        pos += 2 + (Py_ssize_t)len;
        if (pos > size || len < 4) return -1;
        if (known_length(len)) {
            known++;
            *estimate += json_estimate(len);
        }
    }
    return known;
}

/* Write the JSON array of a validated frame and its tokens. Plain C only: runs without the GIL. */
static int encode(Out *o, uint32_t *tokens, const unsigned char *data, int is_mock) {
    uint16_t count = u16(data);
    Py_ssize_t pos = 2, written = 0;
    if (LIT(o, "[") < 0) return -1;
    for (uint16_t i = 0; i < count; i++) {
        uint16_t len = u16(data + pos);
        const unsigned char *p = data + pos + 2;
        pos += 2 + (Py_ssize_t)len;
        if (!known_length(len)) continue;
        if (written && LIT(o, ",") < 0) return -1;
        if (packet(o, p, len) < 0) return -1;
        if (is_mock && LIT(o, ",\"is_mock\":true") < 0) return -1;
        if (LIT(o, "}") < 0) return -1;
        tokens[written++] = u32(p);
    }
    return LIT(o, "]");
}

static PyObject *result_of(const Out *o, const uint32_t *tokens, Py_ssize_t n) {
    PyObject *list = PyList_New(n);
    if (list == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyLong_FromUnsignedLong(tokens[i]);
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, t);
    }
    PyObject *body = PyBytes_FromStringAndSize(o->buf, (Py_ssize_t)o->len);
    PyObject *result = body == NULL ? NULL : PyTuple_Pack(2, body, list);
    Py_XDECREF(body);
    Py_DECREF(list);
    return result;
}

static PyObject *frame_to_json(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    int is_mock, release_gil = 1;
    if (!PyArg_ParseTuple(args, "y*p|p", &view, &is_mock, &release_gil)) return NULL;
    const unsigned char *data = view.buf;
    Out o;
    memset(&o, 0, sizeof o);
    uint32_t *tokens = NULL;
    size_t estimate = 0;
    int rc = 0;
    PyThreadState *state = release_gil ? PyEval_SaveThread() : NULL;
    Py_ssize_t n = validate(data, view.len, &estimate);
    if (n >= 0) {
        tokens = PyMem_RawMalloc(sizeof(uint32_t) * (size_t)(n ? n : 1));
        rc = tokens == NULL || out_reserve(&o, estimate) < 0 ? -1 : encode(&o, tokens, data, is_mock);
    }
    if (state != NULL) PyEval_RestoreThread(state);
    PyObject *result;
    if (n < 0)
        result = Py_NewRef(Py_None);
    else if (rc < 0)
        result = PyErr_NoMemory();
    else
        result = result_of(&o, tokens, n);
    PyMem_RawFree(tokens);
    PyMem_RawFree(o.buf);
    PyBuffer_Release(&view);
    return result;
}

/* Byte offsets that cut a frame's packets into runs of at most `per` packets: the start of the
 * first packet, the start of every per-th one after it, and the end of the last. Walks only the
 * `count` packets the header claims and checks each against the frame's size, as `validate`. */
static PyObject *frame_slices(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    Py_ssize_t per;
    if (!PyArg_ParseTuple(args, "y*n", &view, &per)) return NULL;
    const unsigned char *data = view.buf;
    Py_ssize_t size = view.len, pos = 2;
    PyObject *bounds = per > 0 && size >= 2 ? PyList_New(0) : NULL;
    uint16_t count = size >= 2 ? u16(data) : 0;
    for (uint16_t i = 0; bounds != NULL && i <= count; i++) {
        if (i % per == 0 || i == count) {
            PyObject *at = PyLong_FromSsize_t(pos);
            int failed = at == NULL || PyList_Append(bounds, at) < 0;
            Py_XDECREF(at);
            if (failed) Py_CLEAR(bounds);
        }
        if (bounds == NULL || i == count) break;
        if (pos + 2 > size) {
            Py_CLEAR(bounds);
            break;
        }
        uint16_t len = u16(data + pos);
        pos += 2 + (Py_ssize_t)len;
        if (pos > size || len < 4) Py_CLEAR(bounds);
    }
    PyBuffer_Release(&view);
    if (bounds == NULL && !PyErr_Occurred()) return Py_NewRef(Py_None);
    return bounds;
}

static PyMethodDef methods[] = {
    {"frame_to_json", frame_to_json, METH_VARARGS,
     "frame_to_json(frame: bytes, is_mock: bool, release_gil: bool = True)\n"
     "-> (json_bytes, tokens), or None when the frame is malformed."},
    {"frame_slices", frame_slices, METH_VARARGS,
     "frame_slices(frame: bytes, per: int)\n"
     "-> byte offsets cutting the packets into runs of at most `per`, or None when malformed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tickjson", "Kite frames to tick JSON.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__tickjson(void) { return PyModule_Create(&module); }
