/* The request log's rows in C: fcgipool.requestlog.PyRows without the interpreter.
 *
 * Why: the log cost 2.2 us of a 27.8 us request in `make bench` (+7.9 %, the target is 3 %): ~1 us to build and
 * keep a tuple per request, ~0.9 us to format the lines (docs/benchmarks.md). Here a request's row is one C call
 * into a preallocated array (the slot's facts read from its C struct, no tuple), and a flush formats the batch
 * in one loop with integer arithmetic (_crequestlog_lines.c), into a buffer that is written without a copy. The
 * output is byte for byte the Python twin's (tested).
 *
 * Rows(capacity)
 *   add(slot, method, uri, route, status, after, outcomes) -> bool   True when the batch is full (flush it)
 *   append(row)          a Python row tuple (PyRows' format), for tests and tools
 *   format(prefix, tail, no_tasks) -> memoryview of the lines, and empties the batch. The view is of a buffer
 *       the rows keep for the next batch: release it before the next format() (BufferError otherwise)
 *       prefix(method, uri, route, status) -> str    '"method":...,"status":NNN' (cached by the caller)
 *       tail(after, outcomes) -> str                 '"after_ms":...,"tasks":[...],"pid":N' for rows with tasks
 *       no_tasks: str                                the same for a row without
 *   clear(); len()
 */
#include "_crequestlog.h"

#include <string.h>

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

void
rl_rows_clear_all(Rows *self)
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
    rl_rows_clear_all(self);
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
    PyObject *key[KEY_FIELDS] = {method, uri, route, status};
    rl_canonical_key(self, key);
    method = key[0], uri = key[1], route = key[2], status = key[3];
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

static int
rows_getbuffer(Rows *self, Py_buffer *view, int flags)
{
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->text.buf ? self->text.buf : "", self->text.len, 1, flags) < 0) {
        return -1;
    }
    self->exports++;
    return 0;
}

static void
rows_releasebuffer(Rows *self, Py_buffer *view)
{
    self->exports--;
}

static PyBufferProcs rows_as_buffer = {
    .bf_getbuffer = (getbufferproc)rows_getbuffer,
    .bf_releasebuffer = (releasebufferproc)rows_releasebuffer,
};

static PyObject *
rows_clear(Rows *self, PyObject *unused)
{
    rl_rows_clear_all(self);
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
    for (int i = 0; i < KEYS; i++) {
        for (int f = 0; f < KEY_FIELDS; f++) {
            Py_VISIT(self->keys[i][f]);
        }
    }
    return 0;
}

static int
rows_gc_clear(Rows *self)
{
    rl_rows_clear_all(self);
    rl_keys_clear(self);
    return 0;
}

static void
rows_dealloc(Rows *self)
{
    PyObject_GC_UnTrack(self);
    rl_rows_clear_all(self);
    rl_keys_clear(self);
    PyMem_Free(self->text.buf);
    PyMem_Free(self->rows);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef rows_methods[] = {
    {"add", (PyCFunction)(void (*)(void))rows_add, METH_FASTCALL,
     "add(slot, method, uri, route, status, after, outcomes) -> True when the batch is full"},
    {"append", (PyCFunction)rows_append, METH_O, "append(row): a row tuple as fcgipool.requestlog.Row"},
    {"format", (PyCFunction)rl_format, METH_VARARGS, "format(prefix, tail, no_tasks) -> the lines; empties"},
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
    .tp_as_buffer = &rows_as_buffer,
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
