/* The request log's rows in C: fcgipool.requestlog.PyRows without the interpreter.
 *
 * Why: the log cost 2.2 us of a 27.8 us request in `make bench` (+7.9 %, the target is 3 %): ~1 us to build and
 * keep a tuple per request, ~0.9 us to format the lines (docs/benchmarks.md). Here a request's row is one C call
 * into a preallocated array (the slot's facts read from its C struct, no tuple), and a flush formats the batch
 * in one loop with integer arithmetic. The output is byte for byte the Python twin's (tested).
 *
 * Rows(capacity)
 *   add(slot, method, uri, route, status, after, outcomes) -> bool   True when the batch is full (flush it)
 *   append(row)          a Python row tuple (PyRows' format), for tests and tools
 *   format(prefix, tail, no_tasks) -> bytes, and empties the batch
 *       prefix(method, uri, route, status) -> str    '"method":...,"status":NNN' (cached by the caller)
 *       tail(after, outcomes) -> str                 '"after_ms":...,"tasks":[...],"pid":N' for rows with tasks
 *       no_tasks: str                                the same for a row without
 *   clear(); len()
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    PyObject *method, *uri, *route, *status, *outcomes;
    double after, start, answer, cpu;
    long long rss;
} Row;

typedef struct {
    PyObject_HEAD
    Row *rows;
    Py_ssize_t n, cap;
} Rows;

/* the slot's (start, answer, cpu, rss) as the C slot keeps them, through its capsule; NULL: read attributes */
typedef int (*slot_facts_fn)(PyObject *slot, double *start, double *answer, double *cpu, long long *rss);
static slot_facts_fn slot_facts;

static void
row_clear(Row *r)
{
    Py_CLEAR(r->method);
    Py_CLEAR(r->uri);
    Py_CLEAR(r->route);
    Py_CLEAR(r->status);
    Py_CLEAR(r->outcomes);
}

static void
rows_clear_all(Rows *self)
{
    for (Py_ssize_t i = 0; i < self->n; i++) {
        row_clear(&self->rows[i]);
    }
    self->n = 0;
}

static int
rows_init(Rows *self, PyObject *args, PyObject *kwds)
{
    Py_ssize_t cap;
    if (!PyArg_ParseTuple(args, "n:Rows", &cap)) {
        return -1;
    }
    if (cap < 1 || cap > 1000000) {
        PyErr_SetString(PyExc_ValueError, "Rows(capacity): 1 .. 1,000,000");
        return -1;
    }
    rows_clear_all(self);
    PyMem_Free(self->rows);
    self->rows = PyMem_Calloc((size_t)cap, sizeof(Row));
    if (self->rows == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->cap = cap;
    return 0;
}

static int
attr_facts(PyObject *slot, double *start, double *answer, double *cpu, long long *rss)
{
    PyObject *wall0 = PyObject_GetAttrString(slot, "wall0");
    PyObject *last = wall0 ? PyObject_GetAttrString(slot, "last") : NULL;
    PyObject *rss_obj = last ? PyObject_GetAttrString(slot, "rss") : NULL;
    int ok = rss_obj != NULL && PyArg_ParseTuple(last, "dd", answer, cpu);
    if (ok) {
        *start = PyFloat_AsDouble(wall0);
        *rss = PyLong_AsLongLong(rss_obj);
        ok = !PyErr_Occurred();
    }
    Py_XDECREF(wall0);
    Py_XDECREF(last);
    Py_XDECREF(rss_obj);
    return ok ? 0 : -1;
}

static PyObject *
store(Rows *self, PyObject *method, PyObject *uri, PyObject *route, PyObject *status, double after,
      PyObject *outcomes, double start, double answer, double cpu, long long rss)
{
    if (self->rows == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Rows not initialised");
        return NULL;
    }
    if (self->n >= self->cap) {
        PyErr_SetString(PyExc_OverflowError, "the request log's batch is full: flush it");
        return NULL;
    }
    Row *r = &self->rows[self->n++];
    Py_INCREF(method);
    r->method = method;
    Py_INCREF(uri);
    r->uri = uri;
    Py_INCREF(route);
    r->route = route;
    Py_INCREF(status);
    r->status = status;
    Py_INCREF(outcomes);
    r->outcomes = outcomes;
    r->after = after;
    r->start = start;
    r->answer = answer;
    r->cpu = cpu;
    r->rss = rss;
    return PyBool_FromLong(self->n >= self->cap);
}

static PyObject *
rows_add(Rows *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "add(slot, method, uri, route, status, after, outcomes)");
        return NULL;
    }
    double after = PyFloat_AsDouble(args[5]);
    if (after == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    double start, answer, cpu;
    long long rss;
    if ((slot_facts == NULL || slot_facts(args[0], &start, &answer, &cpu, &rss) != 0) &&
        attr_facts(args[0], &start, &answer, &cpu, &rss) < 0) {
        return NULL;
    }
    return store(self, args[1], args[2], args[3], args[4], after, args[6], start, answer, cpu, rss);
}

static PyObject *
rows_append(Rows *self, PyObject *row)
{
    PyObject *method, *uri, *route, *status, *outcomes;
    double after, start, answer, cpu;
    long long rss;
    if (!PyArg_ParseTuple(row, "OOOOdOd(dd)L:append", &method, &uri, &route, &status, &after, &outcomes, &start,
                          &answer, &cpu, &rss)) {
        return NULL;
    }
    PyObject *full = store(self, method, uri, route, status, after, outcomes, start, answer, cpu, rss);
    if (full == NULL) {
        return NULL;
    }
    Py_DECREF(full);
    Py_RETURN_NONE;
}

/* a growing byte buffer */
typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Out;

static int
out_reserve(Out *o, Py_ssize_t more)
{
    if (o->len + more <= o->cap) {
        return 0;
    }
    Py_ssize_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + more) {
        cap *= 2;
    }
    char *buf = PyMem_Realloc(o->buf, (size_t)cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    o->buf = buf;
    o->cap = cap;
    return 0;
}

static int
out_put(Out *o, const char *s, Py_ssize_t n)
{
    if (out_reserve(o, n) < 0) {
        return -1;
    }
    memcpy(o->buf + o->len, s, (size_t)n);
    o->len += n;
    return 0;
}

static int
out_str(Out *o, PyObject *text)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    return s == NULL ? -1 : out_put(o, s, n);
}

/* v in decimal at p; returns the length (v >= 0) */
static int
put_uint(char *p, unsigned long long v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++) {
        p[i] = tmp[n - 1 - i];
    }
    return n;
}

/* seconds as ms with 3 decimals, as the Python twin: whole us rounded half up, then exact decimal digits */
static int
out_ms(Out *o, double seconds)
{
    if (out_reserve(o, 48) < 0) {
        return -1;
    }
    char *p = o->buf + o->len;
    double us = floor(seconds * 1e6 + 0.5);
    int n;
    if (us >= 0.0 && us < 9e15) {
        unsigned long long v = (unsigned long long)us;
        n = put_uint(p, v / 1000);
        unsigned f = (unsigned)(v % 1000);
        p[n++] = '.';
        p[n++] = (char)('0' + f / 100);
        p[n++] = (char)('0' + f / 10 % 10);
        p[n++] = (char)('0' + f % 10);
    } else {
        n = snprintf(p, 48, "%.3f", us / 1000.0);
    }
    o->len += n;
    return 0;
}

static PyObject *
rows_format(Rows *self, PyObject *args)
{
    PyObject *prefix_fn, *tail_fn, *no_tasks;
    if (!PyArg_ParseTuple(args, "OOU:format", &prefix_fn, &tail_fn, &no_tasks)) {
        return NULL;
    }
    Out o = {NULL, 0, 0};
    PyObject *prefix = NULL, *result = NULL;
    PyObject *key[4] = {NULL, NULL, NULL, NULL};
    double base = -INFINITY;
    char time_text[40];
    int time_len = 0;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        Row *r = &self->rows[i];
        if (prefix == NULL || r->method != key[0] || r->uri != key[1] || r->route != key[2] || r->status != key[3]) {
            Py_XDECREF(prefix);
            prefix = PyObject_CallFunctionObjArgs(prefix_fn, r->method, r->uri, r->route, r->status, NULL);
            if (prefix == NULL || !PyUnicode_Check(prefix)) {
                if (prefix != NULL) {
                    PyErr_SetString(PyExc_TypeError, "prefix() must return a str");
                }
                goto done;
            }
            key[0] = r->method, key[1] = r->uri, key[2] = r->route, key[3] = r->status;
        }
        double frac = r->start - base;
        if (!(frac >= 0.0 && frac < 1.0)) {
            base = floor(r->start);
            frac = r->start - base;
            time_len = snprintf(time_text, sizeof time_text, "{\"time\":%.0f.", base);
        }
        int ms = (int)floor(frac * 1000.0);  /* 0 .. 999: frac is in [0, 1) */
        ms = ms < 0 ? 0 : ms > 999 ? 999 : ms;
        char ms_text[4] = {(char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10), ','};
        if (out_put(&o, time_text, time_len) < 0 || out_put(&o, ms_text, 4) < 0 || out_str(&o, prefix) < 0 ||
            out_put(&o, ",\"answer_ms\":", 13) < 0 || out_ms(&o, r->answer) < 0 || out_put(&o, ",", 1) < 0) {
            goto done;
        }
        if (r->outcomes == Py_None) {
            if (out_str(&o, no_tasks) < 0) {
                goto done;
            }
        } else {
            PyObject *after = PyFloat_FromDouble(r->after);
            PyObject *tail = after ? PyObject_CallFunctionObjArgs(tail_fn, after, r->outcomes, NULL) : NULL;
            Py_XDECREF(after);
            int rc = tail != NULL && PyUnicode_Check(tail) ? out_str(&o, tail) : -1;
            if (tail != NULL && !PyUnicode_Check(tail)) {
                PyErr_SetString(PyExc_TypeError, "tail() must return a str");
            }
            Py_XDECREF(tail);
            if (rc < 0) {
                goto done;
            }
        }
        if (out_put(&o, ",\"cpu_ms\":", 10) < 0 || out_ms(&o, r->cpu) < 0 || out_put(&o, ",\"rss\":", 7) < 0 ||
            out_reserve(&o, 24) < 0) {
            goto done;
        }
        if (r->rss >= 0) {
            o.len += put_uint(o.buf + o.len, (unsigned long long)r->rss);
        } else {
            o.len += snprintf(o.buf + o.len, 24, "%lld", r->rss);
        }
        if (out_put(&o, "}\n", 2) < 0) {
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize(o.buf ? o.buf : "", o.len);
done:
    Py_XDECREF(prefix);
    PyMem_Free(o.buf);
    if (result != NULL) {
        rows_clear_all(self);
    }
    return result;
}

static PyObject *
rows_clear(Rows *self, PyObject *unused)
{
    rows_clear_all(self);
    Py_RETURN_NONE;
}

static Py_ssize_t
rows_len(Rows *self)
{
    return self->n;
}

static int
rows_traverse(Rows *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->n; i++) {
        Row *r = &self->rows[i];
        Py_VISIT(r->method);
        Py_VISIT(r->uri);
        Py_VISIT(r->route);
        Py_VISIT(r->status);
        Py_VISIT(r->outcomes);
    }
    return 0;
}

static int
rows_gc_clear(Rows *self)
{
    rows_clear_all(self);
    return 0;
}

static void
rows_dealloc(Rows *self)
{
    PyObject_GC_UnTrack(self);
    rows_clear_all(self);
    PyMem_Free(self->rows);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef rows_methods[] = {
    {"add", (PyCFunction)(void (*)(void))rows_add, METH_FASTCALL,
     "add(slot, method, uri, route, status, after, outcomes) -> True when the batch is full"},
    {"append", (PyCFunction)rows_append, METH_O, "append(row): a row tuple as fcgipool.requestlog.Row"},
    {"format", (PyCFunction)rows_format, METH_VARARGS, "format(prefix, tail, no_tasks) -> the lines; empties"},
    {"clear", (PyCFunction)rows_clear, METH_NOARGS, "drop every row"},
    {NULL},
};

static PySequenceMethods rows_as_sequence = {.sq_length = (lenfunc)rows_len};

static PyTypeObject RowsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fcgipool._crequestlog.Rows",
    .tp_doc = "A worker's request-log rows waiting for a flush (see fcgipool.requestlog).",
    .tp_basicsize = sizeof(Rows),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)rows_init,
    .tp_dealloc = (destructor)rows_dealloc,
    .tp_traverse = (traverseproc)rows_traverse,
    .tp_clear = (inquiry)rows_gc_clear,
    .tp_methods = rows_methods,
    .tp_as_sequence = &rows_as_sequence,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fcgipool._crequestlog",
    .m_doc = "The request log's rows in C (see fcgipool.requestlog).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__crequestlog(void)
{
    if (PyType_Ready(&RowsType) < 0) {
        return NULL;
    }
    /* the C slot, when built, shares its facts without attribute lookups */
    slot_facts = (slot_facts_fn)PyCapsule_Import("fcgipool.scoreboard._cslot.facts", 0);
    if (slot_facts == NULL) {
        PyErr_Clear();
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    /* whether rows read a C slot's struct (tests; a miss would cost attribute lookups, not correctness) */
    if (PyModule_AddIntConstant(m, "SLOT_FACTS", slot_facts != NULL) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&RowsType);
    if (PyModule_AddObject(m, "Rows", (PyObject *)&RowsType) < 0) {
        Py_DECREF(&RowsType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
