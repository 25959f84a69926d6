/* The span processor's per-span fast path: CodebookSpanProcessor.on_end without a Python frame.
 *
 * SpanHook(processor, enricher_type, ends, slow, fail, readable_type, bounded_type,
 *          enriched_type, keys, default_status, unset_code, error_status) is installed by
 * processor.py as the processor's on_end when this extension is built. Called as
 * hook(span), it does what the Python on_end does for the two common cases and nothing else.
 * It reads processor.enricher on every call (so assigning another enricher takes effect) and
 * takes the fast path only while that enricher is of enricher_type, whose enrich_span it
 * inlines.
 *
 *  - the span carries no provider.code: every downstream on_end gets the same span object;
 *  - the span is a plain ReadableSpan (the SDK's per-on_end snapshot) whose attributes are a
 *    BoundedAttributes that dropped nothing (or a dict), and its (source, code, subcode,
 *    message) is in the enricher's span cache of the current codebook generation: the hit's
 *    series are counted under the hit's lock, and every downstream gets the enriched copy,
 *    built exactly as the Python fast copy builds it (the span's instance dict copied, with
 *    the merged attributes and, for an error category when the status is UNSET, the
 *    category's ERROR status from error_status(category)).
 *
 * Everything else (a span with an event named provider.result, another span class, a cache
 * miss, an unhashable value, dropped attributes,
 * any unexpected shape or failure before counting) is handed whole to slow(span), the Python
 * on_end, which counts, copies and forwards it itself; nothing is counted twice because the
 * hand-over happens before this path counts. A downstream that raises is reported through
 * fail(exception) and the next downstream still gets the span. The hook never raises.
 *
 * keys: (provider.source, provider.code, provider.subcode, provider.message, error.type).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *processor, *ends, *slow, *fail;
    PyTypeObject *enricher_type, *readable_type, *bounded_type, *enriched_type;
    PyObject *k_source, *k_code, *k_subcode, *k_message, *k_error;
    PyObject *default_status, *unset_code, *error_status;
} SpanHook;

/* Interned attribute names, created once at import. */
static PyObject *s_enricher, *s_attributes, *s_dict, *s_dropped, *s_spans, *s_status_code, *s_value,
    *s_acquire, *s_release, *s_status, *s_dunder_dict, *empty_tuple, *one;

/* Report the pending exception through fail(exc); never leaves an exception set. */
static void report(SpanHook *h) {
    PyObject *exc = NULL, *tb = NULL, *type = NULL;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (exc != NULL && tb != NULL) PyException_SetTraceback(exc, tb);
    PyObject *r = PyObject_CallOneArg(h->fail, exc != NULL ? exc : Py_None);
    Py_XDECREF(r);
    PyErr_Clear(); /* fail() itself never raises; if it somehow did, do not propagate */
    Py_XDECREF(type);
    Py_XDECREF(exc);
    Py_XDECREF(tb);
}

static PyObject *forward(SpanHook *h, PyObject *span) {
    Py_ssize_t n = PyTuple_GET_SIZE(h->ends);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyObject_CallOneArg(PyTuple_GET_ITEM(h->ends, i), span);
        if (r == NULL)
            report(h);
        else
            Py_DECREF(r);
    }
    Py_RETURN_NONE;
}

static PyObject *hand_over(SpanHook *h, PyObject *span) {
    PyErr_Clear();
    PyObject *r = PyObject_CallOneArg(h->slow, span);
    if (r == NULL) report(h); /* the Python on_end never raises; this is only a backstop */
    Py_XDECREF(r);
    Py_RETURN_NONE;
}

/* Add 1 to every cell's ``value`` under ``lock``; 0 on success, -1 with an exception set. */
static int count(PyObject *cells, PyObject *lock) {
    PyObject *r = PyObject_CallMethodNoArgs(lock, s_acquire);
    if (r == NULL) return -1;
    Py_DECREF(r);
    int rc = 0;
    Py_ssize_t n = PyTuple_GET_SIZE(cells);
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        PyObject *cell = PyTuple_GET_ITEM(cells, i);
        PyObject *v = PyObject_GetAttr(cell, s_value);
        if (v == NULL) {
            rc = -1;
            break;
        }
        PyObject *nv = PyFloat_CheckExact(v) ? PyFloat_FromDouble(PyFloat_AS_DOUBLE(v) + 1.0)
                                             : PyNumber_Add(v, one);
        Py_DECREF(v);
        if (nv == NULL || PyObject_SetAttr(cell, s_value, nv) < 0) rc = -1;
        Py_XDECREF(nv);
    }
    PyObject *exc_t = NULL, *exc_v = NULL, *exc_tb = NULL;
    if (rc < 0) PyErr_Fetch(&exc_t, &exc_v, &exc_tb);
    r = PyObject_CallMethodNoArgs(lock, s_release);
    if (rc < 0) PyErr_Restore(exc_t, exc_v, exc_tb);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return rc;
}

/* The enriched copy of span (a plain ReadableSpan), or NULL with an exception set. */
static PyObject *enriched(SpanHook *h, PyObject *span, PyObject *raw, PyObject *extra) {
    PyObject *state = NULL, *fields = NULL, *merged = NULL, *out = NULL, *status = NULL;
    PyObject *error_type = NULL, *current = NULL;
    state = PyObject_GenericGetDict(span, NULL);
    if (state == NULL || !PyDict_CheckExact(state)) goto done;
    fields = PyDict_Copy(state);
    if (fields == NULL) goto done;
    merged = PyDict_Copy(raw);
    if (merged == NULL || PyDict_Update(merged, extra) < 0) goto done;
    if (PyDict_SetItem(fields, s_attributes, merged) < 0) goto done;
    error_type = PyDict_GetItemWithError(extra, h->k_error);
    if (error_type == NULL && PyErr_Occurred()) goto done;
    Py_XINCREF(error_type); /* owned: reading status_code below may run Python code */
    if (error_type != NULL) {
        current = PyDict_GetItemWithError(fields, s_status);
        if (current == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "_status");
            goto done;
        }
        Py_INCREF(current); /* owned: its status_code may be a Python property */
        int unset = current == h->default_status;
        if (!unset) {
            PyObject *code = PyObject_GetAttr(current, s_status_code);
            if (code == NULL) goto done;
            unset = code == h->unset_code;
            Py_DECREF(code);
        }
        if (unset) {
            status = PyObject_CallOneArg(h->error_status, error_type);
            if (status == NULL || PyDict_SetItem(fields, s_status, status) < 0) goto done;
        }
    }
    /* As Python's ``object.__new__(cls).__dict__ = fields``: through the type's __dict__
     * descriptor, which (unlike PyObject_GenericSetDict on 3.13) also retires the instance's
     * inline values, so attribute lookups find the fields. */
    out = h->enriched_type->tp_new(h->enriched_type, empty_tuple, NULL);
    if (out != NULL && PyObject_SetAttr(out, s_dunder_dict, fields) < 0) Py_CLEAR(out);
done:
    if (out == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "codebook: unexpected span state");
    Py_XDECREF(state);
    Py_XDECREF(fields);
    Py_XDECREF(merged);
    Py_XDECREF(status);
    Py_XDECREF(error_type);
    Py_XDECREF(current);
    return out;
}

/* raw[key] or None in *out, a new reference: the next lookup may run a str-subclass key's
 * __eq__, which may delete this value from raw; -1 when the lookup raised. */
static int get_or_none(PyObject *raw, PyObject *key, PyObject **out) {
    PyObject *v = PyDict_GetItemWithError(raw, key);
    if (v == NULL && PyErr_Occurred()) return -1;
    *out = Py_NewRef(v != NULL ? v : Py_None);
    return 0;
}

/* 1 when span has an event named provider.result (the Python on_end enriches those), 0 when
 * not, -1 on an unexpected shape (also handed over). Reads the SDK's ``_events`` (a
 * BoundedList, or a tuple) and each event's ``name``; names created on first use. */
static int has_result_event(PyObject *span) {
    static PyObject *s_events, *s_name, *s_result;
    if (s_result == NULL) {
        s_events = PyUnicode_InternFromString("_events");
        s_name = PyUnicode_InternFromString("name");
        s_result = PyUnicode_InternFromString("provider.result");
        if (s_events == NULL || s_name == NULL || s_result == NULL) return -1;
    }
    PyObject *events = PyObject_GetAttr(span, s_events);
    if (events == NULL) return -1;
    if (PyTuple_CheckExact(events) && PyTuple_GET_SIZE(events) == 0) {
        Py_DECREF(events);
        return 0;
    }
    Py_ssize_t n = PyObject_Length(events);
    if (n <= 0) { /* empty (the common case), or not a sequence */
        Py_DECREF(events);
        return n == 0 ? 0 : -1;
    }
    PyObject *seq = PySequence_Fast(events, "events"); /* owns the items while we read */
    Py_DECREF(events);
    if (seq == NULL) return -1;
    int found = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq) && !found; i++) {
        PyObject *name = PyObject_GetAttr(PySequence_Fast_GET_ITEM(seq, i), s_name);
        if (name == NULL) {
            found = -1;
            break;
        }
        found = PyUnicode_Check(name) ? PyUnicode_Compare(name, s_result) == 0 : 0;
        Py_DECREF(name);
    }
    Py_DECREF(seq);
    return found;
}

static PyObject *hook_call(PyObject *self, PyObject *const *args, size_t nargsf,
                           PyObject *kwnames) {
    SpanHook *h = (SpanHook *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL)
        return PyObject_Vectorcall(h->slow, args, nargsf, kwnames); /* not the SDK's call */
    PyObject *span = args[0];
    if (Py_TYPE(span) != h->readable_type) return hand_over(h, span);
    if (has_result_event(span) != 0) return hand_over(h, span); /* events: Python on_end */

    PyObject *attrs = NULL, *raw = NULL, *enricher = NULL, *spans = NULL, *key = NULL;
    PyObject *hit = NULL, *copy = NULL, *result = NULL;
    PyObject *code = NULL, *source = NULL, *subcode = NULL, *message = NULL;
    attrs = PyObject_GetAttr(span, s_attributes);
    if (attrs == NULL) goto slow;
    if (Py_TYPE(attrs) == h->bounded_type) {
        raw = PyObject_GetAttr(attrs, s_dict);
        if (raw == NULL) goto slow;
    } else if (PyDict_CheckExact(attrs)) {
        raw = Py_NewRef(attrs);
    } else {
        goto slow;
    }
    if (!PyDict_CheckExact(raw)) goto slow;
    /* Own every value right after its lookup: a later lookup may run Python code (a
     * str-subclass key's __eq__) that removes an earlier value from raw and frees it. */
    code = PyDict_GetItemWithError(raw, h->k_code);
    if (code == NULL) {
        if (PyErr_Occurred()) goto slow;
        result = forward(h, span); /* no provider code: the same object goes downstream */
        goto done;
    }
    Py_INCREF(code);
    if (get_or_none(raw, h->k_source, &source) < 0 ||
        get_or_none(raw, h->k_subcode, &subcode) < 0 ||
        get_or_none(raw, h->k_message, &message) < 0)
        goto slow;
    /* Owned references only from here on: hashing or comparing a value, or reading an
     * attribute, may run Python code and let another thread run (and clear the cache). */
    key = PyTuple_Pack(4, source, code, subcode, message);
    if (key == NULL) goto slow;
    enricher = PyObject_GetAttr(h->processor, s_enricher);
    if (enricher == NULL || Py_TYPE(enricher) != h->enricher_type) goto slow;
    spans = PyObject_GetAttr(enricher, s_spans);
    if (spans == NULL || !PyTuple_CheckExact(spans) || PyTuple_GET_SIZE(spans) != 2) goto slow;
    PyObject *cache = PyTuple_GET_ITEM(spans, 1);
    if (!PyDict_CheckExact(cache)) goto slow;
    hit = PyDict_GetItemWithError(cache, key); /* TypeError when unhashable */
    if (hit == NULL || !PyTuple_CheckExact(hit) || PyTuple_GET_SIZE(hit) != 3) {
        hit = NULL;
        goto slow;
    }
    Py_INCREF(hit);
    PyObject *extra = PyTuple_GET_ITEM(hit, 0), *cells = PyTuple_GET_ITEM(hit, 1);
    if (!PyDict_CheckExact(extra) || !PyTuple_CheckExact(cells)) goto slow;
    if (attrs != raw) { /* a BoundedAttributes: the copy keeps no count, so it must be 0 */
        PyObject *dropped = PyObject_GetAttr(attrs, s_dropped);
        if (dropped == NULL) goto slow;
        int zero = PyLong_CheckExact(dropped) && PyLong_AsLong(dropped) == 0;
        Py_DECREF(dropped);
        if (!zero) goto slow;
    }
    copy = enriched(h, span, raw, extra);
    if (copy == NULL) goto slow;
    if (count(cells, PyTuple_GET_ITEM(hit, 2)) < 0) report(h); /* still forwarded */
    result = forward(h, copy);
    goto done;
slow:
    result = hand_over(h, span);
done:
    Py_XDECREF(attrs);
    Py_XDECREF(raw);
    Py_XDECREF(enricher);
    Py_XDECREF(spans);
    Py_XDECREF(key);
    Py_XDECREF(hit);
    Py_XDECREF(copy);
    Py_XDECREF(code);
    Py_XDECREF(source);
    Py_XDECREF(subcode);
    Py_XDECREF(message);
    return result;
}

static PyObject *hook_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *processor, *enricher_t, *ends, *slow, *fail, *readable, *bounded, *enriched_t,
        *keys, *default_status, *unset_code, *error_status;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "SpanHook takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO!O!OOO!O!O!O!OOO:SpanHook", &processor, &PyType_Type,
                          &enricher_t, &PyTuple_Type, &ends, &slow, &fail, &PyType_Type,
                          &readable, &PyType_Type, &bounded, &PyType_Type, &enriched_t,
                          &PyTuple_Type, &keys, &default_status, &unset_code, &error_status))
        return NULL;
    if (PyTuple_GET_SIZE(keys) != 5) {
        PyErr_SetString(PyExc_ValueError, "SpanHook: keys must be 5 strings");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < 5; i++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(keys, i))) {
            PyErr_SetString(PyExc_TypeError, "SpanHook: keys must be 5 strings");
            return NULL;
        }
    }
    if (!PyType_IsSubtype((PyTypeObject *)enriched_t, (PyTypeObject *)readable)) {
        PyErr_SetString(PyExc_TypeError, "SpanHook: enriched_type must subclass readable_type");
        return NULL;
    }
    SpanHook *h = (SpanHook *)type->tp_alloc(type, 0);
    if (h == NULL) return NULL;
    h->vectorcall = hook_call;
    h->processor = Py_NewRef(processor);
    h->enricher_type = (PyTypeObject *)Py_NewRef(enricher_t);
    h->ends = Py_NewRef(ends);
    h->slow = Py_NewRef(slow);
    h->fail = Py_NewRef(fail);
    h->readable_type = (PyTypeObject *)Py_NewRef(readable);
    h->bounded_type = (PyTypeObject *)Py_NewRef(bounded);
    h->enriched_type = (PyTypeObject *)Py_NewRef(enriched_t);
    h->k_source = Py_NewRef(PyTuple_GET_ITEM(keys, 0));
    h->k_code = Py_NewRef(PyTuple_GET_ITEM(keys, 1));
    h->k_subcode = Py_NewRef(PyTuple_GET_ITEM(keys, 2));
    h->k_message = Py_NewRef(PyTuple_GET_ITEM(keys, 3));
    h->k_error = Py_NewRef(PyTuple_GET_ITEM(keys, 4));
    h->default_status = Py_NewRef(default_status);
    h->unset_code = Py_NewRef(unset_code);
    h->error_status = Py_NewRef(error_status);
    return (PyObject *)h;
}

static int hook_traverse(SpanHook *h, visitproc visit, void *arg) {
    Py_VISIT(h->processor);
    Py_VISIT(h->enricher_type);
    Py_VISIT(h->ends);
    Py_VISIT(h->slow);
    Py_VISIT(h->fail);
    Py_VISIT(h->readable_type);
    Py_VISIT(h->bounded_type);
    Py_VISIT(h->enriched_type);
    Py_VISIT(h->default_status);
    Py_VISIT(h->unset_code);
    Py_VISIT(h->error_status);
    return 0;
}

static int hook_clear(SpanHook *h) {
    Py_CLEAR(h->processor);
    Py_CLEAR(h->enricher_type);
    Py_CLEAR(h->ends);
    Py_CLEAR(h->slow);
    Py_CLEAR(h->fail);
    Py_CLEAR(h->readable_type);
    Py_CLEAR(h->bounded_type);
    Py_CLEAR(h->enriched_type);
    Py_CLEAR(h->k_source);
    Py_CLEAR(h->k_code);
    Py_CLEAR(h->k_subcode);
    Py_CLEAR(h->k_message);
    Py_CLEAR(h->k_error);
    Py_CLEAR(h->default_status);
    Py_CLEAR(h->unset_code);
    Py_CLEAR(h->error_status);
    return 0;
}

static void hook_dealloc(SpanHook *h) {
    PyObject_GC_UnTrack(h);
    hook_clear(h);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static PyMemberDef hook_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(SpanHook, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject SpanHookType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "exporter._hot.SpanHook",
    .tp_basicsize = sizeof(SpanHook),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "SpanHook(...)(span): CodebookSpanProcessor.on_end's fast path (see _hot.c).",
    .tp_new = hook_new,
    .tp_traverse = (traverseproc)hook_traverse,
    .tp_clear = (inquiry)hook_clear,
    .tp_dealloc = (destructor)hook_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(SpanHook, vectorcall),
    .tp_members = hook_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hot", "The span processor's per-span fast path.", -1,
    NULL, NULL, NULL, NULL, NULL,
};

static const struct {
    PyObject **slot;
    const char *text;
} names[] = {
    {&s_enricher, "enricher"}, {&s_attributes, "_attributes"}, {&s_dict, "_dict"},
    {&s_dropped, "dropped"},   {&s_spans, "_spans"},           {&s_status_code, "status_code"},
    {&s_value, "value"},       {&s_acquire, "acquire"},        {&s_release, "release"},
    {&s_status, "_status"},    {&s_dunder_dict, "__dict__"},
};

PyMODINIT_FUNC PyInit__hot(void) {
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL) return NULL;
    }
    empty_tuple = PyTuple_New(0);
    one = PyLong_FromLong(1);
    if (empty_tuple == NULL || one == NULL || PyType_Ready(&SpanHookType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "SpanHook", (PyObject *)&SpanHookType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
