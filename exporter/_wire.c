/* The OTLP trace fast path: validate and enrich an ExportTraceServiceRequest in its wire form.
 *
 * enrich_traces(buf, resolve, input_keys, output_keys) first validates buf against the
 * schema given to set_schema() (built from the installed protobuf descriptors), then walks it
 * down to its spans (ExportTraceServiceRequest.resource_spans -> ResourceSpans.scope_spans ->
 * ScopeSpans.spans) without building any message objects. For every span it reads the
 * trace/span ids, the status code and the attributes whose keys are in input_keys
 * (provider.source, .code, .subcode, .message) or output_keys (what Codebook adds).
 *
 * Spans whose ids are not 16/8 bytes or are all zero are removed (counted as rejected).
 * Spans carrying input_keys[1] (the code) are grouped by their four input values; resolve is
 * called once per distinct group as resolve(source, code, subcode, message, n_spans) and
 * returns None (leave those spans alone) or (blob, error_blob): serialized Span fields to
 * append to each span of the group (error_blob, which also sets status ERROR, for spans whose
 * status is UNSET; None when the code is not an error). Output attributes already on an
 * enriched span are removed first, so they are replaced rather than duplicated.
 *
 * Returns (new_request_bytes or None when nothing changed, accepted_spans, rejected_spans).
 * Raises ValueError *before calling resolve* when buf is invalid or uses a wire form this
 * walker does not interpret (groups, a known field with another wire type, packed numbers, a
 * singular field repeated, a oneof set twice, deep nesting): the caller then lets the
 * protobuf runtime parse it, which either rejects it or takes the message path. The walker
 * must never accept what the runtime rejects (tests/test_wire.py fuzzes exactly that).
 *
 * Span events named provider.result are grouped and resolved with the spans (one count
 * each): an event of a group that resolve enriched gets the blob's attributes (rewritten as
 * Span.Event attributes) appended and its stale output attributes removed; it never gets
 * the error blob (an event has no status). A span's status is the span's own.
 *
 * enrich_logs(buf, resolve, input_keys, output_keys, logs_root) does the same for an
 * ExportLogsServiceRequest (resource_logs -> scope_logs -> log_records, attributes field 6):
 * a record whose trace_id/span_id is set but not 16/8 bytes is removed (rejected), and a
 * record carrying a code gets the blob (never the error blob: a record has no status).
 *
 * Validation, the walk and the rewrite run without the GIL; resolve runs with it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define WT_VARINT 0
#define WT_I64 1
#define WT_LEN 2
#define WT_I32 5

/* Kinds of an input value, as the message path reads AnyValue's oneof. */
enum { V_NONE = 0, V_STRING, V_BOOL, V_INT, V_DOUBLE, V_BYTES };

typedef struct {
    int kind;
    const uint8_t *p; /* payload (string/bytes) or raw varint/fixed64 bytes */
    Py_ssize_t n;
    uint64_t u; /* decoded varint or fixed64 bits */
} Value;

typedef struct {
    Py_ssize_t start; /* offset of the payload in buf */
    Py_ssize_t len;   /* payload length */
    Py_ssize_t stale; /* bytes of output-key attribute fields (tag+len+payload) */
    Py_ssize_t key;   /* group index, or -1 */
    int bad;
    int unset;
    Py_ssize_t ev_first, ev_n; /* its provider.result events: w->events[ev_first ...] */
} SpanInfo;

/* One span event named provider.result (enriched like a span; never gets the error blob). */
typedef struct {
    Py_ssize_t field_len; /* the whole Span.events field: tag, length and payload */
    Py_ssize_t tag_len;
    Py_ssize_t len;   /* payload length */
    Py_ssize_t stale; /* bytes of output-key attribute fields */
    Py_ssize_t key;   /* group index, or -1 */
    Value v[4];
    int have_code;
} EventInfo;

typedef struct {
    Value v[4];
    uint64_t hash;
    Py_ssize_t count;
} Group;

typedef struct {
    const uint8_t *base;
    const uint8_t **in_keys;
    Py_ssize_t in_len[4];
    const uint8_t **out_keys;
    Py_ssize_t *out_len;
    Py_ssize_t n_out;
    SpanInfo *spans;
    Py_ssize_t n_spans, cap_spans;
    Group *groups;
    Py_ssize_t n_groups, cap_groups;
    Py_ssize_t *table; /* open addressing over groups; -1 empty */
    Py_ssize_t table_size;
    uint32_t attr_field; /* the items' attributes field: 0 for spans (9), 6 for log records */
    EventInfo *events;
    Py_ssize_t n_events, cap_events;
} Walk;

/* The walk runs without the GIL, so failures are recorded here and raised afterwards. */
static _Thread_local const char *t_err;
static _Thread_local int t_nomem;

static int bail(const char *why) {
    t_err = why;
    return -1;
}

static int nomem(void) {
    t_nomem = 1;
    return -1;
}

static void raise_walk_error(void) {
    if (t_nomem)
        PyErr_NoMemory();
    else
        PyErr_SetString(PyExc_ValueError, t_err != NULL ? t_err : "unsupported wire form");
}

static int read_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= end) return bail("truncated varint");
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            *pp = p;
            return 0;
        }
    }
    return bail("varint too long");
}

/* Reads one field header and locates its payload. For LEN fields the payload and its length
 * are the contents; for others they span the raw value bytes. *next is where the next field begins. */
static int read_field(const uint8_t *p, const uint8_t *end, uint32_t *field, int *wt,
                      const uint8_t **payload, Py_ssize_t *plen, const uint8_t **next,
                      uint64_t *scalar) {
    uint64_t tag;
    const uint8_t *tag_start = p;
    if (read_varint(&p, end, &tag) < 0) return -1;
    if (p - tag_start > 5) return bail("tag longer than 5 bytes");
    *field = (uint32_t)(tag >> 3);
    *wt = (int)(tag & 7);
    if (*field == 0 || tag >> 3 > 0x1fffffff) return bail("bad field number");
    switch (*wt) {
    case WT_VARINT: {
        const uint8_t *s = p;
        if (read_varint(&p, end, scalar) < 0) return -1;
        *payload = s;
        *plen = p - s;
        break;
    }
    case WT_I64:
        if (end - p < 8) return bail("truncated fixed64");
        memcpy(scalar, p, 8); /* little-endian hosts only: checked at module init */
        *payload = p;
        *plen = 8;
        p += 8;
        break;
    case WT_LEN: {
        /* upb reads a length as an int32 of at most 5 bytes (padded ones included) and
         * rejects a longer or larger one, even in an unknown field; so does the walker. */
        uint64_t n;
        const uint8_t *s = p;
        if (read_varint(&p, end, &n) < 0) return -1;
        if (p - s > 5) return bail("length longer than 5 bytes");
        if (n > 0x7fffffff) return bail("length past 2**31-1");
        if (n > (uint64_t)(end - p)) return bail("truncated length-delimited field");
        *payload = p;
        *plen = (Py_ssize_t)n;
        p += n;
        break;
    }
    case WT_I32:
        if (end - p < 4) return bail("truncated fixed32");
        *payload = p;
        *plen = 4;
        p += 4;
        break;
    default:
        return bail("group or unknown wire type");
    }
    *next = p;
    return 0;
}

static Py_ssize_t varint_size(uint64_t v) {
    Py_ssize_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *write_varint(uint8_t *o, uint64_t v) {
    while (v >= 0x80) {
        *o++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *o++ = (uint8_t)v;
    return o;
}

/* -- validation against the installed schema ---------------------------------------------
 *
 * set_schema() receives the message types reachable from ExportTraceServiceRequest, built
 * from the protobuf descriptors at import, so what is validated follows the installed
 * opentelemetry-proto. The walker accepts only what the protobuf runtime accepts; wherever
 * it is unsure (a known field with another wire type, packed numbers, groups, deep nesting)
 * it bails, and the caller lets the protobuf runtime decide.
 */

enum { K_VARINT = 0, K_I64 = 1, K_BYTES = 2, K_I32 = 5, K_STRING = 8, K_MESSAGE = 9, K_BAIL = 10 };
#define MAX_DEPTH 32
#define DIRECT 32

typedef struct {
    uint32_t number;
    int kind;
    Py_ssize_t sub;
} FieldDef;

typedef struct {
    FieldDef *fields;
    Py_ssize_t n;
    int8_t direct[DIRECT]; /* index into fields for small field numbers, -1 if unknown */
} MsgDef;

static MsgDef *g_schema;
static Py_ssize_t g_n_msgs;

static const FieldDef *find_field(const MsgDef *m, uint32_t number) {
    if (number < DIRECT) {
        int8_t i = m->direct[number];
        return i < 0 ? NULL : &m->fields[i];
    }
    for (Py_ssize_t i = 0; i < m->n; i++)
        if (m->fields[i].number == number) return &m->fields[i];
    return NULL;
}

static int utf8_ok(const uint8_t *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t x;
            memcpy(&x, s + i, 8);
            if (!(x & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
        } else if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n) return 0;
            uint8_t c1 = s[i + 1], c2 = s[i + 2];
            if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && c1 < 0xA0) return 0; /* overlong */
            if (c == 0xED && c1 >= 0xA0) return 0; /* surrogate */
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n) return 0;
            uint8_t c1 = s[i + 1], c2 = s[i + 2], c3 = s[i + 3];
            if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80 || (c3 & 0xC0) != 0x80) return 0;
            if (c == 0xF0 && c1 < 0x90) return 0; /* overlong */
            if (c == 0xF4 && c1 >= 0x90) return 0; /* above U+10FFFF */
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

static int validate(const uint8_t *p, const uint8_t *end, Py_ssize_t msg, int depth) {
    if (depth > MAX_DEPTH) return bail("nesting deeper than the walker follows");
    const MsgDef *m = &g_schema[msg];
    while (p < end) {
        uint32_t f;
        int wt;
        const uint8_t *pl, *next;
        Py_ssize_t n;
        uint64_t u;
        if (read_field(p, end, &f, &wt, &pl, &n, &next, &u) < 0) return -1;
        const FieldDef *fd = find_field(m, f);
        if (fd != NULL) {
            switch (fd->kind) {
            case K_STRING:
                if (wt != WT_LEN) return bail("string field with another wire type");
                if (!utf8_ok(pl, n)) return bail("string field is not valid UTF-8");
                break;
            case K_MESSAGE:
                if (wt != WT_LEN) return bail("message field with another wire type");
                if (validate(pl, pl + n, fd->sub, depth + 1) < 0) return -1;
                break;
            case K_BYTES:
            case K_VARINT:
            case K_I64:
            case K_I32:
                if (wt != fd->kind) return bail("field with another wire type");
                break;
            default:
                return bail("field kind the walker leaves to the runtime");
            }
        }
        p = next;
    }
    return 0;
}

static void free_schema(MsgDef *schema, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) PyMem_Free(schema[i].fields);
    PyMem_Free(schema);
}

static PyObject *set_schema(PyObject *self, PyObject *arg) {
    (void)self;
    if (g_schema != NULL) { /* walks read it without the GIL: it is never replaced */
        PyErr_SetString(PyExc_RuntimeError, "the schema is set once");
        return NULL;
    }
    PyObject *msgs = PySequence_Fast(arg, "schema must be a sequence of messages");
    if (msgs == NULL) return NULL;
    Py_ssize_t n_msgs = PySequence_Fast_GET_SIZE(msgs);
    MsgDef *schema = PyMem_Calloc((size_t)n_msgs + 1, sizeof(MsgDef));
    if (schema == NULL) {
        Py_DECREF(msgs);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n_msgs; i++) {
        memset(schema[i].direct, -1, DIRECT);
        PyObject *fields = PySequence_Fast(PySequence_Fast_GET_ITEM(msgs, i),
                                           "a message must be a sequence of fields");
        if (fields == NULL) goto fail;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(fields);
        schema[i].fields = PyMem_Calloc((size_t)n + 1, sizeof(FieldDef));
        schema[i].n = n;
        if (schema[i].fields == NULL || n > 127) {
            Py_DECREF(fields);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "too many fields");
            goto fail;
        }
        for (Py_ssize_t j = 0; j < n; j++) {
            unsigned int number;
            int kind;
            Py_ssize_t sub;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fields, j), "Iin", &number, &kind,
                                  &sub)) {
                Py_DECREF(fields);
                goto fail;
            }
            if (kind == K_MESSAGE && (sub < 0 || sub >= n_msgs)) {
                Py_DECREF(fields);
                PyErr_SetString(PyExc_ValueError, "message field names no message");
                goto fail;
            }
            schema[i].fields[j] = (FieldDef){number, kind, sub};
            if (number < DIRECT) schema[i].direct[number] = (int8_t)j;
        }
        Py_DECREF(fields);
    }
    Py_DECREF(msgs);
    g_schema = schema;
    g_n_msgs = n_msgs;
    Py_RETURN_NONE;
fail:
    Py_DECREF(msgs);
    free_schema(schema, n_msgs);
    return NULL;
}

/* -- reading one span ---------------------------------------------------------------------- */

static int read_anyvalue(const uint8_t *p, const uint8_t *end, Value *out) {
    int seen = 0;
    out->kind = V_NONE;
    while (p < end) {
        uint32_t f;
        int wt;
        const uint8_t *pl, *next;
        Py_ssize_t n;
        uint64_t u = 0;
        if (read_field(p, end, &f, &wt, &pl, &n, &next, &u) < 0) return -1;
        int kind = -1, want = -1;
        switch (f) {
        case 1: kind = V_STRING; want = WT_LEN; break;
        case 2: kind = V_BOOL; want = WT_VARINT; break;
        case 3: kind = V_INT; want = WT_VARINT; break;
        case 4: kind = V_DOUBLE; want = WT_I64; break;
        case 5: case 6: kind = V_NONE; want = WT_LEN; break; /* array, kvlist: no code */
        case 7: kind = V_BYTES; want = WT_LEN; break;
        case 8: kind = V_NONE; want = WT_VARINT; break; /* string_value_strindex: no code */
        default: /* another member of the oneof in a newer schema? the runtime decides */
            return bail("AnyValue field the walker does not know");
        }
        if (kind >= 0) {
            if (wt != want) return bail("AnyValue field with an unexpected wire type");
            if (seen++) return bail("AnyValue with more than one value");
            out->kind = kind;
            out->p = pl;
            out->n = n;
            out->u = u;
        }
        p = next;
    }
    return 0;
}

static int key_is(const uint8_t *k, Py_ssize_t n, const uint8_t *want, Py_ssize_t wn) {
    return n == wn && memcmp(k, want, (size_t)n) == 0;
}

/* One attribute: which input slot it fills (0-3), or 4 for an output key, or -1. */
static int read_keyvalue(Walk *w, const uint8_t *p, const uint8_t *end, Value *val) {
    const uint8_t *key = NULL, *vp = NULL;
    Py_ssize_t kn = 0, vn = 0;
    int nkey = 0, nval = 0;
    while (p < end) {
        uint32_t f;
        int wt;
        const uint8_t *pl, *next;
        Py_ssize_t n;
        uint64_t u;
        if (read_field(p, end, &f, &wt, &pl, &n, &next, &u) < 0) return -2;
        if (f == 1 || f == 2) {
            if (wt != WT_LEN) return bail("KeyValue field with an unexpected wire type"), -2;
            if (f == 1) {
                key = pl;
                kn = n;
                nkey++;
            } else {
                vp = pl;
                vn = n;
                nval++;
            }
        }
        p = next;
    }
    if (nkey > 1 || nval > 1) return bail("KeyValue with a repeated field"), -2;
    if (key == NULL) return -1;
    for (int i = 0; i < 4; i++) {
        if (key_is(key, kn, w->in_keys[i], w->in_len[i])) {
            val->kind = V_NONE;
            if (vp != NULL && read_anyvalue(vp, vp + vn, val) < 0) return -2;
            return i;
        }
    }
    for (Py_ssize_t i = 0; i < w->n_out; i++)
        if (key_is(key, kn, w->out_keys[i], w->out_len[i])) return 4;
    return -1;
}

static int read_status_code(const uint8_t *p, const uint8_t *end, uint64_t *code) {
    int seen = 0;
    *code = 0;
    while (p < end) {
        uint32_t f;
        int wt;
        const uint8_t *pl, *next;
        Py_ssize_t n;
        uint64_t u = 0;
        if (read_field(p, end, &f, &wt, &pl, &n, &next, &u) < 0) return -1;
        if (f == 3) {
            if (wt != WT_VARINT) return bail("Status.code with an unexpected wire type");
            if (seen++) return bail("Status.code repeated");
            *code = u;
        }
        p = next;
    }
    return 0;
}

/* Grouping hashes are keyed (SipHash-1-3, the key drawn from os.urandom at import), so a
 * request cannot choose codes that collide in the table: with the old unkeyed XOR-multiply,
 * ints differing only above bit 20 (or doubles 1.0, 2.0, ...) all landed in one probe run and
 * a 4 MB request cost seconds of CPU. Probes are also bounded (PROBE_LIMIT): past it the walk
 * bails and the message path, which gives the same result, takes the request. */
#define PROBE_LIMIT 128
static uint64_t g_k0, g_k1;
static _Thread_local Py_ssize_t t_probes, t_longest, t_groups; /* walk_stats() */

typedef struct {
    uint64_t v0, v1, v2, v3, tail, len;
    int ntail;
} Sip;

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void sip_round(Sip *s) {
    s->v0 += s->v1;
    s->v1 = ROTL(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = ROTL(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = ROTL(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = ROTL(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = ROTL(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = ROTL(s->v2, 32);
}

static void sip_init(Sip *s) {
    s->v0 = g_k0 ^ 0x736f6d6570736575ULL;
    s->v1 = g_k1 ^ 0x646f72616e646f6dULL;
    s->v2 = g_k0 ^ 0x6c7967656e657261ULL;
    s->v3 = g_k1 ^ 0x7465646279746573ULL;
    s->tail = s->len = 0;
    s->ntail = 0;
}

static void sip_word(Sip *s, uint64_t m) {
    s->v3 ^= m;
    sip_round(s);
    s->v0 ^= m;
}

static void sip_bytes(Sip *s, const uint8_t *p, Py_ssize_t n) {
    s->len += (uint64_t)n;
    for (; n > 0 && s->ntail != 0; n--) {
        s->tail |= (uint64_t)*p++ << (8 * s->ntail);
        if (++s->ntail == 8) {
            sip_word(s, s->tail);
            s->tail = 0;
            s->ntail = 0;
        }
    }
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t m;
        memcpy(&m, p, 8); /* little-endian hosts only: checked at module init */
        sip_word(s, m);
    }
    for (; n > 0; n--) s->tail |= (uint64_t)*p++ << (8 * s->ntail++);
}

static uint64_t sip_final(Sip *s) {
    sip_word(s, (s->len << 56) | s->tail);
    s->v2 ^= 0xff;
    sip_round(s);
    sip_round(s);
    sip_round(s);
    return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

/* Feeds one value: its kind, then its length and bytes or its 8 value bytes. */
static void hash_value(Sip *s, const Value *v) {
    uint8_t head[9] = {(uint8_t)v->kind};
    if (v->kind == V_STRING || v->kind == V_BYTES) {
        uint64_t n = (uint64_t)v->n;
        memcpy(head + 1, &n, 8);
        sip_bytes(s, head, 9);
        sip_bytes(s, v->p, v->n);
    } else {
        uint64_t u = v->kind == V_NONE ? 0 : v->u;
        memcpy(head + 1, &u, 8);
        sip_bytes(s, head, 9);
    }
}

static int value_eq(const Value *a, const Value *b) {
    if (a->kind != b->kind) return 0;
    if (a->kind == V_STRING || a->kind == V_BYTES)
        return a->n == b->n && memcmp(a->p, b->p, (size_t)a->n) == 0;
    return a->kind == V_NONE || a->u == b->u;
}

static int grow_table(Walk *w) {
    Py_ssize_t size = w->table_size ? w->table_size * 2 : 64;
    Py_ssize_t *t = PyMem_RawMalloc((size_t)size * sizeof(Py_ssize_t));
    if (t == NULL) return nomem();
    for (Py_ssize_t i = 0; i < size; i++) t[i] = -1;
    for (Py_ssize_t g = 0; g < w->n_groups; g++) {
        Py_ssize_t i = (Py_ssize_t)((size_t)w->groups[g].hash & (size_t)(size - 1)), probes = 0;
        while (t[i] != -1) {
            if (++probes > PROBE_LIMIT) {
                PyMem_RawFree(t);
                return bail("hash probe run too long");
            }
            i = (i + 1) & (size - 1);
        }
        t[i] = g;
    }
    PyMem_RawFree(w->table);
    w->table = t;
    w->table_size = size;
    return 0;
}

static Py_ssize_t group_of(Walk *w, const Value v[4]) {
    Sip sip;
    sip_init(&sip);
    for (int i = 0; i < 4; i++) hash_value(&sip, &v[i]);
    uint64_t h = sip_final(&sip);
    if ((w->n_groups + 1) * 2 > w->table_size && grow_table(w) < 0) return -2;
    Py_ssize_t i = (Py_ssize_t)((size_t)h & (size_t)(w->table_size - 1)), probes = 0;
    while (w->table[i] != -1) {
        Group *g = &w->groups[w->table[i]];
        if (g->hash == h && value_eq(&g->v[0], &v[0]) && value_eq(&g->v[1], &v[1]) &&
            value_eq(&g->v[2], &v[2]) && value_eq(&g->v[3], &v[3]))
            break;
        if (++probes > PROBE_LIMIT) return bail("hash probe run too long"), -2;
        i = (i + 1) & (w->table_size - 1);
    }
    t_probes += probes;
    if (probes > t_longest) t_longest = probes;
    if (w->table[i] != -1) return w->table[i];
    if (w->n_groups == w->cap_groups) {
        Py_ssize_t cap = w->cap_groups ? w->cap_groups * 2 : 16;
        Group *gs = PyMem_RawRealloc(w->groups, (size_t)cap * sizeof(Group));
        if (gs == NULL) return nomem(), -2;
        w->groups = gs;
        w->cap_groups = cap;
    }
    Group *g = &w->groups[w->n_groups];
    memcpy(g->v, v, 4 * sizeof(Value));
    g->hash = h;
    g->count = 0;
    w->table[i] = w->n_groups;
    return w->n_groups++;
}

static const uint8_t ZERO[16];

/* Whether a Span.Event's payload is named provider.result: 1 yes, 0 no, -1 when its name
 * field is repeated (the runtime keeps the last one; the walker leaves that to it). */
static int event_kind(const uint8_t *p, const uint8_t *end) {
    static const char RESULT[] = "provider.result";
    int names = 0, result = 0;
    while (p < end) {
        uint32_t f;
        int wt;
        const uint8_t *pl, *next;
        Py_ssize_t n;
        uint64_t u;
        if (read_field(p, end, &f, &wt, &pl, &n, &next, &u) < 0) return -1;
        if (f == 2) {
            names++;
            result = wt == WT_LEN && key_is(pl, n, (const uint8_t *)RESULT, sizeof RESULT - 1);
        }
        p = next;
    }
    return names > 1 ? -1 : result;
}

/* Records one provider.result event of the span being scanned (field from field_start to
 * next, payload pl..pl+n): its input attributes and its stale output attributes. */
static int add_event(Walk *w, SpanInfo *s, const uint8_t *field_start, const uint8_t *pl,
                     Py_ssize_t n, const uint8_t *next) {
    if (w->n_events == w->cap_events) {
        Py_ssize_t cap = w->cap_events ? w->cap_events * 2 : 64;
        EventInfo *es = PyMem_RawRealloc(w->events, (size_t)cap * sizeof(EventInfo));
        if (es == NULL) return nomem();
        w->events = es;
        w->cap_events = cap;
    }
    EventInfo x;
    memset(&x, 0, sizeof(x));
    x.field_len = next - field_start;
    const uint8_t *t = field_start;
    uint64_t tag;
    if (read_varint(&t, pl, &tag) < 0) return -1;
    x.tag_len = t - field_start; /* the tag's own length: the length after it may be padded */
    x.len = n;
    x.key = -1;
    const uint8_t *p = pl, *end = pl + n;
    while (p < end) {
        uint32_t f;
        int wt;
        const uint8_t *q, *after;
        Py_ssize_t m;
        uint64_t u;
        if (read_field(p, end, &f, &wt, &q, &m, &after, &u) < 0) return -1;
        if (f == 3) {
            if (wt != WT_LEN) return bail("Event field with an unexpected wire type");
            Value val;
            int slot = read_keyvalue(w, q, q + m, &val);
            if (slot == -2) return -1;
            if (slot >= 0 && slot < 4) {
                x.v[slot] = val; /* the last attribute of a key wins, as in the message path */
                if (slot == 1) x.have_code = 1;
            } else if (slot == 4) {
                x.stale += after - p;
            }
        }
        p = after;
    }
    w->events[w->n_events++] = x;
    s->ev_n++;
    return 0;
}

/* Whether one of the span's provider.result events carries exactly the span's own provider
 * values (it fell in the span's group g): the span then summarises that result, which the
 * event counts, so the span is enriched but not counted (enrich.result_identity). */
static int summarises(const Walk *w, const SpanInfo *s, Py_ssize_t g) {
    for (Py_ssize_t i = s->ev_first; i < s->ev_first + s->ev_n; i++)
        if (w->events[i].key == g) return 1;
    return 0;
}

/* Groups the events of a valid span by their code, as spans are grouped. */
static int group_events(Walk *w, const SpanInfo *s) {
    for (Py_ssize_t i = s->ev_first; i < s->ev_first + s->ev_n; i++) {
        EventInfo *x = &w->events[i];
        if (!x->have_code) continue;
        Py_ssize_t g = group_of(w, x->v);
        if (g == -2) return -1;
        w->groups[g].count++;
        x->key = g;
    }
    return 0;
}

static int scan_span(Walk *w, const uint8_t *p, const uint8_t *end) {
    SpanInfo s = {p - w->base, end - p, 0, -1, 0, 1, 0, 0};
    Value v[4];
    int have[4] = {0, 0, 0, 0};
    const uint8_t *tid = NULL, *sid = NULL;
    Py_ssize_t tn = 0, sn = 0;
    int n_tid = 0, n_sid = 0, n_status = 0;
    memset(v, 0, sizeof(v));
    s.ev_first = w->n_events;
    while (p < end) {
        uint32_t f;
        int wt;
        const uint8_t *pl, *next;
        Py_ssize_t n;
        uint64_t u;
        const uint8_t *field_start = p;
        if (read_field(p, end, &f, &wt, &pl, &n, &next, &u) < 0) return -1;
        if (f == 1 || f == 2 || f == 9 || f == 15) {
            if (wt != WT_LEN) return bail("Span field with an unexpected wire type");
        }
        if (f == 1) {
            tid = pl;
            tn = n;
            n_tid++;
        } else if (f == 2) {
            sid = pl;
            sn = n;
            n_sid++;
        } else if (f == 15) {
            uint64_t code;
            if (n_status++) return bail("Span.status repeated");
            if (read_status_code(pl, pl + n, &code) < 0) return -1;
            s.unset = (uint32_t)code == 0; /* an enum is an int32: upper bits are dropped */
        } else if (f == 9) {
            Value val;
            int slot = read_keyvalue(w, pl, pl + n, &val);
            if (slot == -2) return -1;
            if (slot >= 0 && slot < 4) {
                v[slot] = val; /* the last attribute of a key wins, as in the message path */
                have[slot] = 1;
            } else if (slot == 4) {
                s.stale += next - field_start;
            }
        } else if (f == 11 && wt == WT_LEN) {
            int kind = event_kind(pl, pl + n);
            if (kind < 0) return bail("Span.Event with its name repeated");
            if (kind == 1 && add_event(w, &s, field_start, pl, n, next) < 0) return -1;
        }
        p = next;
    }
    if (n_tid > 1 || n_sid > 1) return bail("Span id repeated");
    s.bad = tn != 16 || sn != 8 || memcmp(tid, ZERO, 16) == 0 || memcmp(sid, ZERO, 8) == 0;
    if (!s.bad && group_events(w, &s) < 0) return -1;
    if (!s.bad && have[1]) {
        Py_ssize_t g = group_of(w, v);
        if (g == -2) return -1;
        if (!summarises(w, &s, g)) w->groups[g].count++;
        s.key = g;
    }
    if (w->n_spans == w->cap_spans) {
        Py_ssize_t cap = w->cap_spans ? w->cap_spans * 2 : 256;
        SpanInfo *ss = PyMem_RawRealloc(w->spans, (size_t)cap * sizeof(SpanInfo));
        if (ss == NULL) return nomem();
        w->spans = ss;
        w->cap_spans = cap;
    }
    w->spans[w->n_spans++] = s;
    return 0;
}

/* Walks one level: every field `child` (LEN) is handed to `inner`; other fields skipped. */
typedef int (*Inner)(Walk *, const uint8_t *, const uint8_t *);

static int scan_level(Walk *w, const uint8_t *p, const uint8_t *end, uint32_t child,
                      Inner inner) {
    while (p < end) {
        uint32_t f;
        int wt;
        const uint8_t *pl, *next;
        Py_ssize_t n;
        uint64_t u;
        if (read_field(p, end, &f, &wt, &pl, &n, &next, &u) < 0) return -1;
        if (f == child) {
            if (wt != WT_LEN) return bail("container field with an unexpected wire type");
            if (inner(w, pl, pl + n) < 0) return -1;
        }
        p = next;
    }
    return 0;
}

static int scan_scope(Walk *w, const uint8_t *p, const uint8_t *end) {
    return scan_level(w, p, end, 2, scan_span);
}

static int scan_resource(Walk *w, const uint8_t *p, const uint8_t *end) {
    return scan_level(w, p, end, 2, scan_scope);
}

/* -- log records (enrich_logs) -------------------------------------------------------------
 *
 * ExportLogsServiceRequest.resource_logs (1) -> ResourceLogs.scope_logs (2) ->
 * ScopeLogs.log_records (2): the same field numbers as for traces, so the writing below
 * serves both. A LogRecord's attributes are field 6; its trace_id (9) and span_id (10) are
 * optional, but when set they must be 16 and 8 bytes (else the record is rejected, as the
 * message path does). A record has no status: it never gets the error blob.
 */
static int scan_log(Walk *w, const uint8_t *p, const uint8_t *end) {
    SpanInfo s = {p - w->base, end - p, 0, -1, 0, 0, 0, 0};
    Value v[4];
    int have[4] = {0, 0, 0, 0};
    Py_ssize_t tn = 0, sn = 0;
    int n_tid = 0, n_sid = 0;
    memset(v, 0, sizeof(v));
    while (p < end) {
        uint32_t f;
        int wt;
        const uint8_t *pl, *next;
        Py_ssize_t n;
        uint64_t u;
        const uint8_t *field_start = p;
        if (read_field(p, end, &f, &wt, &pl, &n, &next, &u) < 0) return -1;
        if (f == 6 || f == 9 || f == 10) {
            if (wt != WT_LEN) return bail("LogRecord field with an unexpected wire type");
        }
        if (f == 9) {
            tn = n;
            n_tid++;
        } else if (f == 10) {
            sn = n;
            n_sid++;
        } else if (f == 6) {
            Value val;
            int slot = read_keyvalue(w, pl, pl + n, &val);
            if (slot == -2) return -1;
            if (slot >= 0 && slot < 4) {
                v[slot] = val; /* the last attribute of a key wins, as in the message path */
                have[slot] = 1;
            } else if (slot == 4) {
                s.stale += next - field_start;
            }
        }
        p = next;
    }
    if (n_tid > 1 || n_sid > 1) return bail("LogRecord id repeated");
    s.bad = (tn != 0 && tn != 16) || (sn != 0 && sn != 8);
    if (!s.bad && have[1]) {
        Py_ssize_t g = group_of(w, v);
        if (g == -2) return -1;
        w->groups[g].count++;
        s.key = g;
    }
    if (w->n_spans == w->cap_spans) {
        Py_ssize_t cap = w->cap_spans ? w->cap_spans * 2 : 256;
        SpanInfo *ss = PyMem_RawRealloc(w->spans, (size_t)cap * sizeof(SpanInfo));
        if (ss == NULL) return nomem();
        w->spans = ss;
        w->cap_spans = cap;
    }
    w->spans[w->n_spans++] = s;
    return 0;
}

static int scan_scope_logs(Walk *w, const uint8_t *p, const uint8_t *end) {
    return scan_level(w, p, end, 2, scan_log);
}

static int scan_resource_logs(Walk *w, const uint8_t *p, const uint8_t *end) {
    return scan_level(w, p, end, 2, scan_scope_logs);
}

/* -- writing ------------------------------------------------------------------------------ */

typedef struct {
    PyObject **blob;  /* per group: bytes or NULL (leave alone) */
    PyObject **eblob; /* per group: bytes or NULL (not an error) */
    Py_ssize_t next_span;
    uint8_t *out;
    PyObject **evblob; /* per group: the blob as Span.Event attributes, or NULL */
    uint8_t *limit; /* end of the output buffer: no write goes past it */
    int overflow;   /* a write did not fit (the measured size was wrong): nothing written */
} Emit;

/* Appends n bytes if they fit before e->limit; otherwise only records the overflow. */
static void put(Emit *e, const void *src, Py_ssize_t n) {
    if (e->overflow || n > e->limit - e->out) {
        e->overflow = 1;
        return;
    }
    memcpy(e->out, src, (size_t)n);
    e->out += n;
}

static void put_varint(Emit *e, uint64_t v) {
    uint8_t b[10];
    put(e, b, write_varint(b, v) - b);
}

static PyObject *span_blob(Walk *w, Emit *e, const SpanInfo *s) {
    (void)w;
    if (s->key < 0 || e->blob[s->key] == NULL) return NULL;
    if (s->unset && e->eblob[s->key] != NULL) return e->eblob[s->key];
    return e->blob[s->key];
}

static PyObject *event_blob(const Emit *e, const EventInfo *x) {
    return x->key < 0 || e->evblob == NULL ? NULL : e->evblob[x->key];
}

/* How many bytes the span's enriched events add; *any: whether any event is enriched. */
static Py_ssize_t events_growth(const Walk *w, const Emit *e, const SpanInfo *s, int *any) {
    Py_ssize_t grow = 0;
    *any = 0;
    for (Py_ssize_t i = s->ev_first; i < s->ev_first + s->ev_n; i++) {
        const EventInfo *x = &w->events[i];
        PyObject *eb = event_blob(e, x);
        if (eb == NULL) continue;
        Py_ssize_t len = x->len - x->stale + PyBytes_GET_SIZE(eb);
        grow += x->tag_len + varint_size((uint64_t)len) + len - x->field_len;
        *any = 1;
    }
    return grow;
}

/* New payload size of a span; -1 when the span is dropped. */
static Py_ssize_t span_size(Walk *w, Emit *e, const SpanInfo *s) {
    if (s->bad) return -1;
    PyObject *b = span_blob(w, e, s);
    int any;
    Py_ssize_t grow = s->ev_n ? events_growth(w, e, s, &any) : 0;
    return (b == NULL ? s->len : s->len - s->stale + PyBytes_GET_SIZE(b)) + grow;
}

/* Writes a span some of whose provider.result events are enriched: those events rewritten
 * (stale output attributes removed, the event blob appended), the span's own stale output
 * attributes removed when it is enriched itself (b), and b appended. */
static void emit_span_events(Walk *w, Emit *e, const SpanInfo *s, PyObject *b) {
    const uint8_t *p = w->base + s->start, *end = p + s->len;
    Py_ssize_t ev = s->ev_first;
    while (p < end) {
        uint32_t f;
        int wt;
        const uint8_t *pl, *next;
        Py_ssize_t n;
        uint64_t u;
        Value val;
        const uint8_t *field_start = p;
        read_field(p, end, &f, &wt, &pl, &n, &next, &u); /* validated by the scan */
        p = next;
        if (f == 9 && b != NULL && s->stale && read_keyvalue(w, pl, pl + n, &val) == 4)
            continue;
        if (f == 11 && wt == WT_LEN && event_kind(pl, pl + n) == 1) {
            const EventInfo *x = &w->events[ev++];
            PyObject *eb = event_blob(e, x);
            if (eb != NULL) {
                Py_ssize_t len = x->len - x->stale + PyBytes_GET_SIZE(eb);
                put(e, field_start, x->tag_len);
                put_varint(e, (uint64_t)len);
                const uint8_t *q = pl, *qend = pl + n;
                while (q < qend) {
                    uint32_t g;
                    int gwt;
                    const uint8_t *gpl, *gnext;
                    Py_ssize_t gn;
                    uint64_t gu;
                    read_field(q, qend, &g, &gwt, &gpl, &gn, &gnext, &gu);
                    if (!(g == 3 && x->stale && read_keyvalue(w, gpl, gpl + gn, &val) == 4))
                        put(e, q, gnext - q);
                    q = gnext;
                }
                put(e, PyBytes_AS_STRING(eb), PyBytes_GET_SIZE(eb));
                continue;
            }
        }
        put(e, field_start, next - field_start);
    }
    if (b != NULL) put(e, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
}

/* The span blob's attributes (Span field 9) as Span.Event attributes (field 3). */
static PyObject *event_attributes(PyObject *blob) {
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(blob);
    const uint8_t *end = p + PyBytes_GET_SIZE(blob);
    PyObject *out = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(blob));
    if (out == NULL) return NULL;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    while (p < end) {
        uint32_t f;
        int wt;
        const uint8_t *pl, *next;
        Py_ssize_t n;
        uint64_t u;
        if (read_field(p, end, &f, &wt, &pl, &n, &next, &u) < 0 || f != 9 || wt != WT_LEN) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_TypeError, "resolve's blob must hold Span attributes only");
            return NULL;
        }
        *o++ = (3 << 3) | WT_LEN; /* a one-byte tag, as field 9's is: the size stays */
        o = write_varint(o, (uint64_t)n);
        memcpy(o, pl, (size_t)n);
        o += n;
        p = next;
    }
    if (_PyBytes_Resize(&out, o - (uint8_t *)PyBytes_AS_STRING(out)) < 0) return NULL;
    return out;
}

/* Sizes are computed by the same walk as the writing, in "measure" mode (out == NULL). */
static Py_ssize_t emit_level(Walk *w, Emit *e, const uint8_t *p, const uint8_t *end,
                             int depth);

static Py_ssize_t emit_span(Walk *w, Emit *e, const SpanInfo *s) {
    const uint8_t *p = w->base + s->start, *end = p + s->len;
    PyObject *b = span_blob(w, e, s);
    if (e->out == NULL) return span_size(w, e, s);
    int any = 0;
    if (s->ev_n) events_growth(w, e, s, &any);
    if (any) {
        emit_span_events(w, e, s, b);
        return span_size(w, e, s);
    }
    if (b == NULL) {
        put(e, p, s->len);
        return s->len;
    }
    if (s->stale == 0) {
        put(e, p, s->len);
    } else {
        while (p < end) {
            uint32_t f;
            int wt;
            const uint8_t *pl, *next;
            Py_ssize_t n;
            uint64_t u;
            Value val;
            read_field(p, end, &f, &wt, &pl, &n, &next, &u); /* validated by the scan */
            uint32_t attrs = w->attr_field ? w->attr_field : 9;
            if (!(f == attrs && read_keyvalue(w, pl, pl + n, &val) == 4)) put(e, p, next - p);
            p = next;
        }
    }
    put(e, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
    return span_size(w, e, s);
}

/* depth 0: request (child 1), 1: ResourceSpans (child 2), 2: ScopeSpans (child 2 = spans). */
static Py_ssize_t emit_level(Walk *w, Emit *e, const uint8_t *p, const uint8_t *end,
                             int depth) {
    uint32_t child = depth == 0 ? 1 : 2;
    Py_ssize_t total = 0;
    while (p < end) {
        uint32_t f;
        int wt;
        const uint8_t *pl, *next;
        Py_ssize_t n;
        uint64_t u;
        const uint8_t *field_start = p;
        read_field(p, end, &f, &wt, &pl, &n, &next, &u); /* validated by the scan */
        if (f != child) {
            if (e->out != NULL) put(e, field_start, next - field_start);
            total += next - field_start;
        } else {
            Py_ssize_t size;
            Py_ssize_t first = e->next_span;
            uint8_t *saved = e->out;
            const uint8_t *q = field_start;
            uint64_t tag;
            read_varint(&q, end, &tag); /* the tag's own length: lengths may be padded */
            Py_ssize_t tag_len = q - field_start;
            if (depth == 2) {
                const SpanInfo *s = &w->spans[e->next_span++];
                size = span_size(w, e, s);
                if (size < 0) {
                    p = next;
                    continue;
                }
                if (e->out != NULL) {
                    put(e, field_start, tag_len);
                    put_varint(e, (uint64_t)size);
                    emit_span(w, e, s);
                }
            } else {
                /* measure the child first, then write it with its new length */
                e->out = NULL;
                size = emit_level(w, e, pl, pl + n, depth + 1);
                e->out = saved;
                if (e->out != NULL) {
                    e->next_span = first;
                    put(e, field_start, tag_len);
                    put_varint(e, (uint64_t)size);
                    emit_level(w, e, pl, pl + n, depth + 1);
                }
            }
            total += tag_len + varint_size((uint64_t)size) + size;
        }
        p = next;
    }
    return total;
}

/* -- the entry point ---------------------------------------------------------------------- */

static PyObject *value_object(const Value *v) {
    switch (v->kind) {
    case V_STRING:
        return PyUnicode_DecodeUTF8((const char *)v->p, v->n, "strict");
    case V_BYTES:
        return PyBytes_FromStringAndSize((const char *)v->p, v->n);
    case V_BOOL:
        return PyBool_FromLong(v->u != 0);
    case V_INT:
        return PyLong_FromLongLong((long long)v->u);
    case V_DOUBLE: {
        double d;
        memcpy(&d, &v->u, 8);
        return PyFloat_FromDouble(d);
    }
    default:
        Py_RETURN_NONE;
    }
}

/* seq must be a tuple of bytes (immutable: the pointers are used without the GIL while the
 * caller holds the tuple). */
static int keys_from(PyObject *seq, Py_ssize_t want, const uint8_t ***keys, Py_ssize_t **lens,
                     Py_ssize_t *count) {
    if (!PyTuple_Check(seq)) {
        PyErr_SetString(PyExc_TypeError, "keys must be a tuple of bytes");
        return -1;
    }
    PyObject *fast = PySequence_Fast(seq, "keys must be a tuple of bytes");
    if (fast == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if ((want >= 0 && n != want) || n > 64) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "wrong number of keys");
        return -1;
    }
    *keys = PyMem_Malloc((size_t)(n + 1) * sizeof(uint8_t *));
    *lens = PyMem_Malloc((size_t)(n + 1) * sizeof(Py_ssize_t));
    if (*keys == NULL || *lens == NULL) {
        Py_DECREF(fast);
        return PyErr_NoMemory(), -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyBytes_Check(k)) {
            Py_DECREF(fast);
            PyErr_SetString(PyExc_TypeError, "keys must be bytes");
            return -1;
        }
        (*keys)[i] = (const uint8_t *)PyBytes_AS_STRING(k);
        (*lens)[i] = PyBytes_GET_SIZE(k);
    }
    *count = n;
    Py_DECREF(fast); /* the key bytes stay alive: the caller's sequence holds them */
    return 0;
}

/* Set by enrich_logs for the one enrich_traces call it makes: the schema index of
 * ExportLogsServiceRequest (0: a trace request). Read once, at the start of that call. */
static _Thread_local Py_ssize_t t_logs_root;

static PyObject *enrich_traces(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t logs_root = t_logs_root;
    t_logs_root = 0;
    /* bytes only: the walk runs without the GIL and reads the buffer twice, so it must not
     * be able to change in between (a bytearray could). */
    PyObject *data, *resolve, *in_seq, *out_seq, *result = NULL;
    if (!PyArg_ParseTuple(args, "SOOO", &data, &resolve, &in_seq, &out_seq)) return NULL;
    Py_INCREF(data);
    Py_INCREF(in_seq);
    Py_INCREF(out_seq);
    Walk w;
    memset(&w, 0, sizeof(w));
    w.base = (const uint8_t *)PyBytes_AS_STRING(data);
    Emit e = {NULL, NULL, 0, NULL, NULL, NULL, 0};
    const uint8_t **in_keys = NULL;
    Py_ssize_t *in_lens = NULL, n_in = 0;
    if (keys_from(in_seq, 4, &in_keys, &in_lens, &n_in) < 0) goto done;
    for (int i = 0; i < 4; i++) w.in_len[i] = in_lens[i];
    w.in_keys = in_keys;
    if (keys_from(out_seq, -1, &w.out_keys, &w.out_len, &w.n_out) < 0) goto done;

    const uint8_t *start = w.base, *end = start + PyBytes_GET_SIZE(data);
    if (g_schema == NULL || g_n_msgs == 0) {
        PyErr_SetString(PyExc_ValueError, "no schema: call set_schema first");
        goto done;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    t_err = NULL;
    t_nomem = 0;
    w.attr_field = logs_root ? 6 : 0;
    t_probes = t_longest = 0;
    rc = validate(start, end, logs_root, 0);
    if (rc == 0)
        rc = scan_level(&w, start, end, 1, logs_root ? scan_resource_logs : scan_resource);
    t_groups = w.n_groups;
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        raise_walk_error();
        goto done;
    }

    Py_ssize_t rejected = 0;
    for (Py_ssize_t i = 0; i < w.n_spans; i++) rejected += w.spans[i].bad;
    Py_ssize_t accepted = w.n_spans - rejected;

    e.blob = PyMem_Calloc((size_t)w.n_groups + 1, sizeof(PyObject *));
    e.eblob = PyMem_Calloc((size_t)w.n_groups + 1, sizeof(PyObject *));
    if (e.blob == NULL || e.eblob == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* Decode every group's values first, so a value that cannot be decoded bails before
     * any resolve call has counted anything. */
    PyObject **vals = PyMem_Calloc((size_t)w.n_groups * 4 + 1, sizeof(PyObject *));
    if (vals == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int ok = 1;
    for (Py_ssize_t g = 0; g < w.n_groups * 4 && ok; g++) {
        vals[g] = value_object(&w.groups[g / 4].v[g % 4]);
        if (vals[g] == NULL) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "an input value cannot be decoded");
            ok = 0;
        }
    }
    int changed = rejected > 0;
    for (Py_ssize_t g = 0; g < w.n_groups && ok; g++) {
        PyObject *r = PyObject_CallFunction(resolve, "OOOOn", vals[4 * g], vals[4 * g + 1],
                                            vals[4 * g + 2], vals[4 * g + 3],
                                            w.groups[g].count);
        if (r == NULL) {
            ok = 0;
            break;
        }
        if (r != Py_None) {
            PyObject *b, *eb;
            if (!PyArg_ParseTuple(r, "SO", &b, &eb) || (eb != Py_None && !PyBytes_Check(eb))) {
                Py_DECREF(r);
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "resolve must return (bytes, bytes|None)");
                ok = 0;
                break;
            }
            Py_INCREF(b);
            e.blob[g] = b;
            if (eb != Py_None) {
                Py_INCREF(eb);
                e.eblob[g] = eb;
            }
            changed = 1;
        }
        Py_DECREF(r);
    }
    for (Py_ssize_t g = 0; g < w.n_groups * 4; g++) Py_XDECREF(vals[g]);
    PyMem_Free(vals);
    if (ok && w.n_events > 0) { /* the blobs as event attributes, for groups events use */
        e.evblob = PyMem_Calloc((size_t)w.n_groups + 1, sizeof(PyObject *));
        if (e.evblob == NULL) {
            PyErr_NoMemory();
            ok = 0;
        }
        for (Py_ssize_t i = 0; i < w.n_events && ok; i++) {
            Py_ssize_t g = w.events[i].key;
            if (g < 0 || e.blob[g] == NULL || e.evblob[g] != NULL) continue;
            e.evblob[g] = event_attributes(e.blob[g]);
            if (e.evblob[g] == NULL) ok = 0;
        }
    }
    if (!ok) goto done;

    PyObject *out = Py_None;
    if (changed) {
        Py_ssize_t size;
        Py_BEGIN_ALLOW_THREADS
        size = emit_level(&w, &e, start, end, 0);
        Py_END_ALLOW_THREADS
        out = PyBytes_FromStringAndSize(NULL, size);
        if (out == NULL) goto done;
        e.out = (uint8_t *)PyBytes_AS_STRING(out);
        e.limit = e.out + size; /* every write is checked against it, before it is made */
        e.next_span = 0;
        uint8_t *first = e.out;
        Py_BEGIN_ALLOW_THREADS
        emit_level(&w, &e, start, end, 0);
        Py_END_ALLOW_THREADS
        if (e.overflow || e.out - first != size) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_SystemError, "codebook wire: size mismatch");
            goto done;
        }
    } else {
        Py_INCREF(out);
    }
    result = Py_BuildValue("(Nnn)", out, accepted, rejected);

done:
    if (e.blob != NULL)
        for (Py_ssize_t g = 0; g < w.n_groups; g++) Py_XDECREF(e.blob[g]);
    if (e.eblob != NULL)
        for (Py_ssize_t g = 0; g < w.n_groups; g++) Py_XDECREF(e.eblob[g]);
    if (e.evblob != NULL)
        for (Py_ssize_t g = 0; g < w.n_groups; g++) Py_XDECREF(e.evblob[g]);
    PyMem_Free(e.evblob);
    PyMem_Free(e.blob);
    PyMem_Free(e.eblob);
    PyMem_Free(in_keys);
    PyMem_Free(in_lens);
    PyMem_Free((void *)w.out_keys);
    PyMem_Free(w.out_len);
    PyMem_RawFree(w.spans);
    PyMem_RawFree(w.groups);
    PyMem_RawFree(w.table);
    PyMem_RawFree(w.events);
    Py_DECREF(data);
    Py_DECREF(in_seq);
    Py_DECREF(out_seq);
    return result;
}

/* enrich_logs(buf, resolve, input_keys, output_keys, logs_root): enrich_traces for a
 * serialized ExportLogsServiceRequest, validated against schema message logs_root. */
static PyObject *enrich_logs(PyObject *self, PyObject *args) {
    PyObject *data, *resolve, *in_seq, *out_seq;
    Py_ssize_t root;
    if (!PyArg_ParseTuple(args, "SOOOn", &data, &resolve, &in_seq, &out_seq, &root)) return NULL;
    if (g_schema == NULL || root <= 0 || root >= g_n_msgs) {
        PyErr_SetString(PyExc_ValueError, "logs_root names no message of the schema");
        return NULL;
    }
    PyObject *rest = PyTuple_Pack(4, data, resolve, in_seq, out_seq);
    if (rest == NULL) return NULL;
    t_logs_root = root;
    PyObject *r = enrich_traces(self, rest);
    t_logs_root = 0;
    Py_DECREF(rest);
    return r;
}

static PyObject *walk_stats(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return Py_BuildValue("{s:n,s:n,s:n,s:n}", "groups", t_groups, "probes", t_probes,
                         "longest_probe", t_longest, "probe_limit", (Py_ssize_t)PROBE_LIMIT);
}

static PyMethodDef methods[] = {
    {"set_schema", set_schema, METH_O,
     "set_schema(messages): the message types the walker validates against, once per process; "
     "messages[0] is ExportTraceServiceRequest; each message is a sequence of (number, kind, "
     "sub) fields."},
    {"enrich_traces", enrich_traces, METH_VARARGS,
     "enrich_traces(buf, resolve, input_keys, output_keys) -> (bytes | None, accepted, "
     "rejected): enrich a serialized ExportTraceServiceRequest (see the module source)."},
    {"enrich_logs", enrich_logs, METH_VARARGS,
     "enrich_logs(buf, resolve, input_keys, output_keys, logs_root) -> (bytes | None, "
     "accepted, rejected): the same for a serialized ExportLogsServiceRequest."},
    {"walk_stats", walk_stats, METH_NOARGS,
     "walk_stats() -> {groups, probes, longest_probe, probe_limit}: the grouping table's work "
     "in this thread's last enrich_traces walk (a walk past probe_limit bails)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_wire", "The OTLP trace fast path (wire-format enrichment).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__wire(void) {
    uint16_t probe = 1;
    if (*(uint8_t *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "codebook wire fast path needs a little-endian host");
        return NULL;
    }
    PyObject *os = PyImport_ImportModule("os");
    PyObject *key = os == NULL ? NULL : PyObject_CallMethod(os, "urandom", "i", 16);
    Py_XDECREF(os);
    if (key == NULL) return NULL;
    if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) != 16) {
        Py_DECREF(key);
        PyErr_SetString(PyExc_ImportError, "os.urandom(16) did not give 16 bytes");
        return NULL;
    }
    memcpy(&g_k0, PyBytes_AS_STRING(key), 8);
    memcpy(&g_k1, PyBytes_AS_STRING(key) + 8, 8);
    Py_DECREF(key);
    return PyModule_Create(&module);
}
