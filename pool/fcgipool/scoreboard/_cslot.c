/* The scoreboard slot's per-request writes in C: the base class of fcgipool.scoreboard.writer.Slot.
 *
 * Why: a request's two seqlock writes (begin_request, end_response) and their bookkeeping cost ~2 us of Python
 * per request, the largest part of fcgipool's bookkeeping over the bare protocol (docs/benchmarks.md). The same
 * logic in Python is fcgipool.scoreboard.writer.PyHot: the reference this one is tested against, and what runs
 * without a compiler. The layout (offsets, the names block) and the timings come from Python at _attach(), so
 * they are declared once, in fcgipool.scoreboard.layout.
 *
 * Seqlock (see fcgipool.scoreboard): the sequence goes odd, the fields are stored, the sequence goes even; a
 * release fence on each side keeps the compiler and the CPU from moving a field store across a sequence store.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include <time.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the scoreboard is little-endian (fcgipool.scoreboard.layout): build without the C slot"
#endif

enum { F_SEQ, F_STATE, F_STATE_SINCE, F_DEADLINE, F_LENGTH, F_START, F_REQUESTS, F_DURATION, F_LAST_CPU,
       F_LAST_MEMORY, F_PEAK, F_RSS, F_NAMES, N_FIELDS };
static const char *field_names[N_FIELDS] = {
    "seq", "state", "state_since", "deadline", "content_length", "request_start", "requests",
    "request_duration", "last_cpu", "last_memory", "memory_peak", "memory_rss", "method"};
enum { IDLE = 0, READING = 1, RUNNING = 2 };  /* fcgipool.scoreboard.layout.WorkerState */

typedef struct {
    PyObject_HEAD
    PyObject *mm;
    Py_ssize_t base;
    unsigned long long seq;
    double t0, wall, wall0, deadline, start;
    long long length;
    double cpu0, cpu_at, cpu_each;
    long long cpu_n;
    double rss_at;
    long long rss, peak, requests;
    double last_answer, last_cpu;
    PyObject *names[4];       /* the (method, uri, query, script) objects last written */
    PyObject *encode_names;   /* (method, uri, query, script) -> the names block's bytes */
    PyObject *read_rss;       /* () -> int */
    Py_ssize_t off[N_FIELDS];
    Py_ssize_t names_size, slot_size;
    double cpu_every, rss_every;
    int attached;
} SlotCore;

static double
clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void put_d(char *p, Py_ssize_t off, double v) { memcpy(p + off, &v, 8); }
static inline void put_q(char *p, Py_ssize_t off, long long v) { memcpy(p + off, &v, 8); }

/* The slot's bytes in the mmap, for one write (not kept: a held buffer would stop the mmap from closing). */
static char *
open_slot(SlotCore *s, Py_buffer *view)
{
    if (!s->attached) {
        PyErr_SetString(PyExc_RuntimeError, "Slot used before _attach()");
        return NULL;
    }
    if (PyObject_GetBuffer(s->mm, view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    if (s->base < 0 || s->base + s->slot_size > view->len) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "the slot lies outside the scoreboard");
        return NULL;
    }
    return (char *)view->buf + s->base;
}

static inline void
seq_open(SlotCore *s, char *p)
{
    __atomic_store_n((unsigned long long *)(p + s->off[F_SEQ]), s->seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static inline void
seq_close(SlotCore *s, char *p)
{
    __atomic_thread_fence(__ATOMIC_RELEASE);
    s->seq += 2;
    __atomic_store_n((unsigned long long *)(p + s->off[F_SEQ]), s->seq, __ATOMIC_RELAXED);
}

/* state, state_since, deadline, content_length, request_start: one block in the layout */
static void
put_begin(SlotCore *s, char *p, int state, double now, long long length)
{
    p[s->off[F_STATE]] = (char)state;
    put_d(p, s->off[F_STATE_SINCE], now);
    put_d(p, s->off[F_DEADLINE], s->deadline);
    put_q(p, s->off[F_LENGTH], length);
    put_d(p, s->off[F_START], now);
}

static int
kw_index(PyObject *kwname, const char *const *names, int n)
{
    for (int i = 0; i < n; i++) {
        if (PyUnicode_CompareWithASCIIString(kwname, names[i]) == 0) {
            return i;
        }
    }
    PyErr_Format(PyExc_TypeError, "unexpected keyword argument %R", kwname);
    return -1;
}

/* Positional and keyword arguments into args[0..n) (NULL where not given); 0, or -1 with an exception. */
static int
parse_args(PyObject *const *in, size_t nargsf, PyObject *kwnames, PyObject **args, const char *const *names,
           int n, int required, const char *fname)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments", fname, n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        args[i] = i < nargs ? in[i] : NULL;
    }
    if (kwnames != NULL) {
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(kwnames); k++) {
            int i = kw_index(PyTuple_GET_ITEM(kwnames, k), names, n);
            if (i < 0) {
                return -1;
            }
            if (args[i] != NULL) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for '%s'", fname, names[i]);
                return -1;
            }
            args[i] = in[nargs + k];
        }
    }
    for (int i = 0; i < required; i++) {
        if (args[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing argument '%s'", fname, names[i]);
            return -1;
        }
    }
    return 0;
}

static PyObject *empty_str;

/* A phase begins at t0 (monotonic; 0: now): kept for the answer time, returned as wall-clock time. */
static double
phase_start(SlotCore *s, double t0)
{
    s->t0 = t0 != 0.0 ? t0 : clock_s(CLOCK_MONOTONIC);
    return s->t0 + s->wall;
}

static PyObject *
begin_request(SlotCore *s, PyObject *const *in, size_t nargsf, PyObject *kwnames)
{
    static const char *const names[] = {"method", "uri", "query", "content_length", "script", "deadline", "t0"};
    PyObject *a[7];
    if (parse_args(in, nargsf, kwnames, a, names, 7, 4, "begin_request") < 0) {
        return NULL;
    }
    PyObject *key[4] = {a[0], a[1], a[2], a[4] != NULL ? a[4] : empty_str};
    long long length = PyLong_AsLongLong(a[3]);
    if (length == -1 && PyErr_Occurred()) {
        return NULL;
    }
    double deadline = s->deadline;
    if (a[5] != NULL && a[5] != Py_None) {
        deadline = PyFloat_AsDouble(a[5]);
        if (deadline == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
    }
    double t0 = a[6] != NULL ? PyFloat_AsDouble(a[6]) : 0.0;
    if (t0 == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    /* the names block is written only when the objects differ from the last request's (1.3 KB a copy) */
    PyObject *encoded = NULL;
    if (key[0] != s->names[0] || key[1] != s->names[1] || key[2] != s->names[2] || key[3] != s->names[3]) {
        encoded = PyObject_CallFunctionObjArgs(s->encode_names, key[0], key[1], key[2], key[3], NULL);
        if (encoded == NULL) {
            return NULL;
        }
        if (!PyBytes_Check(encoded) || PyBytes_GET_SIZE(encoded) != s->names_size) {
            Py_DECREF(encoded);
            PyErr_SetString(PyExc_ValueError, "encode_names must return the names block's bytes");
            return NULL;
        }
    }
    Py_buffer view;
    char *p = open_slot(s, &view);
    if (p == NULL) {
        Py_XDECREF(encoded);
        return NULL;
    }
    double now = s->wall0 = phase_start(s, t0);
    s->deadline = deadline;
    s->length = length > 0 ? length : 0;
    s->start = now;
    seq_open(s, p);
    put_begin(s, p, RUNNING, now, s->length);
    if (encoded != NULL) {
        memcpy(p + s->off[F_NAMES], PyBytes_AS_STRING(encoded), (size_t)s->names_size);
    }
    seq_close(s, p);
    PyBuffer_Release(&view);
    if (encoded != NULL) {
        Py_DECREF(encoded);
        for (int i = 0; i < 4; i++) {
            Py_INCREF(key[i]);
            Py_XSETREF(s->names[i], key[i]);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
reading(SlotCore *s, PyObject *const *in, size_t nargsf, PyObject *kwnames)
{
    static const char *const names[] = {"deadline", "t0"};
    PyObject *a[2];
    if (parse_args(in, nargsf, kwnames, a, names, 2, 1, "reading") < 0) {
        return NULL;
    }
    double deadline = PyFloat_AsDouble(a[0]);
    double t0 = a[1] != NULL ? PyFloat_AsDouble(a[1]) : 0.0;
    if ((deadline == -1.0 || t0 == -1.0) && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    char *p = open_slot(s, &view);
    if (p == NULL) {
        return NULL;
    }
    double now = s->start = phase_start(s, t0);
    s->deadline = deadline;
    s->length = 0;
    seq_open(s, p);
    put_begin(s, p, READING, now, 0);
    seq_close(s, p);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *
rest(SlotCore *s, PyObject *unused)
{
    Py_buffer view;
    char *p = open_slot(s, &view);
    if (p == NULL) {
        return NULL;
    }
    s->cpu0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    s->cpu_at = clock_s(CLOCK_MONOTONIC);
    s->cpu_n = 0;
    s->deadline = 0.0;
    seq_open(s, p);
    p[s->off[F_STATE]] = IDLE;
    put_d(p, s->off[F_STATE_SINCE], s->cpu_at + s->wall);
    put_d(p, s->off[F_DEADLINE], 0.0);
    seq_close(s, p);
    PyBuffer_Release(&view);
    return PyFloat_FromDouble(s->cpu_at);
}

static PyObject *
end_response(SlotCore *s, PyObject *const *in, size_t nargsf, PyObject *kwnames)
{
    static const char *const names[] = {"cpu_seconds", "memory_bytes", "rest"};
    PyObject *a[3];
    if (parse_args(in, nargsf, kwnames, a, names, 3, 0, "end_response") < 0) {
        return NULL;
    }
    int to_rest = a[2] != NULL ? PyObject_IsTrue(a[2]) : 0;
    if (to_rest < 0) {
        return NULL;
    }
    double given_cpu = 0.0;
    long long given_memory = 0;
    if (a[0] != NULL && a[0] != Py_None && (given_cpu = PyFloat_AsDouble(a[0])) == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (a[1] != NULL && a[1] != Py_None && (given_memory = PyLong_AsLongLong(a[1])) == -1 && PyErr_Occurred()) {
        return NULL;
    }
    double now = clock_s(CLOCK_MONOTONIC);
    if (now - s->rss_at >= s->rss_every) {  /* first: the call may fail, and then nothing has changed */
        PyObject *rss = PyObject_CallNoArgs(s->read_rss);
        long long value = rss != NULL ? PyLong_AsLongLong(rss) : -1;
        Py_XDECREF(rss);
        if (value == -1 && PyErr_Occurred()) {
            return NULL;
        }
        s->rss_at = now;
        s->rss = value;
        s->wall = clock_s(CLOCK_REALTIME) - now;
    }
    double cpu = given_cpu;
    if (a[0] == NULL || a[0] == Py_None) {
        s->cpu_n += 1;
        if (now - s->cpu_at >= s->cpu_every) {
            double cpu_now = clock_s(CLOCK_PROCESS_CPUTIME_ID);
            s->cpu_each = (cpu_now - s->cpu0) / (double)s->cpu_n;
            s->cpu0 = cpu_now;
            s->cpu_at = now;
            s->cpu_n = 0;
        }
        cpu = s->cpu_each;
    }
    long long memory = (a[1] == NULL || a[1] == Py_None) ? s->rss : given_memory;
    if (memory > s->peak) {
        s->peak = memory;
    }
    s->requests += 1;
    double answer = s->t0 != 0.0 ? now - s->t0 : 0.0;
    s->last_answer = answer;
    s->last_cpu = cpu;
    Py_buffer view;
    char *p = open_slot(s, &view);
    if (p == NULL) {
        return NULL;
    }
    seq_open(s, p);
    if (to_rest) {
        s->deadline = 0.0;
        p[s->off[F_STATE]] = IDLE;
        put_d(p, s->off[F_STATE_SINCE], now + s->wall);
        put_d(p, s->off[F_DEADLINE], 0.0);
        put_q(p, s->off[F_LENGTH], s->length);
        put_d(p, s->off[F_START], s->start);
    }
    put_q(p, s->off[F_REQUESTS], s->requests);
    put_d(p, s->off[F_DURATION], answer);
    put_d(p, s->off[F_LAST_CPU], cpu);
    put_q(p, s->off[F_LAST_MEMORY], memory);
    put_q(p, s->off[F_PEAK], s->peak);
    put_q(p, s->off[F_RSS], s->rss);
    seq_close(s, p);
    PyBuffer_Release(&view);
    return PyFloat_FromDouble(now);
}

static PyObject *
attach(SlotCore *s, PyObject *args)
{
    PyObject *offsets, *encode_names, *read_rss;
    Py_ssize_t names_size, slot_size;
    double cpu_every, rss_every;
    if (!PyArg_ParseTuple(args, "O!nnddOO:_attach", &PyDict_Type, &offsets, &names_size, &slot_size, &cpu_every,
                          &rss_every, &encode_names, &read_rss)) {
        return NULL;
    }
    if (s->mm == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set _mm before _attach()");
        return NULL;
    }
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *off = PyDict_GetItemString(offsets, field_names[i]);
        if (off == NULL) {
            PyErr_Format(PyExc_KeyError, "the layout has no field %s", field_names[i]);
            return NULL;
        }
        s->off[i] = PyLong_AsSsize_t(off);
        if (s->off[i] < 0 || s->off[i] + 8 > slot_size) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_ValueError, "field %s outside the slot", field_names[i]);
            }
            return NULL;
        }
    }
    if (s->off[F_SEQ] % 8 != 0 || s->off[F_NAMES] + names_size > slot_size) {
        PyErr_SetString(PyExc_ValueError, "seq must be 8-byte aligned and the names block inside the slot");
        return NULL;
    }
    s->names_size = names_size;
    s->slot_size = slot_size;
    s->cpu_every = cpu_every;
    s->rss_every = rss_every;
    Py_INCREF(encode_names);
    Py_XSETREF(s->encode_names, encode_names);
    Py_INCREF(read_rss);
    Py_XSETREF(s->read_rss, read_rss);
    s->attached = 1;
    Py_RETURN_NONE;
}

static PyObject *
get_last(SlotCore *s, void *closure)
{
    return Py_BuildValue("(dd)", s->last_answer, s->last_cpu);
}

static int
set_last(SlotCore *s, PyObject *value, void *closure)
{
    if (value == NULL || !PyArg_ParseTuple(value, "dd", &s->last_answer, &s->last_cpu)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "last is (seconds, CPU seconds)");
        }
        return -1;
    }
    return 0;
}

static int
traverse(SlotCore *s, visitproc visit, void *arg)
{
    Py_VISIT(s->mm);
    Py_VISIT(s->encode_names);
    Py_VISIT(s->read_rss);
    for (int i = 0; i < 4; i++) {
        Py_VISIT(s->names[i]);
    }
    return 0;
}

static int
clear(SlotCore *s)
{
    Py_CLEAR(s->mm);
    Py_CLEAR(s->encode_names);
    Py_CLEAR(s->read_rss);
    for (int i = 0; i < 4; i++) {
        Py_CLEAR(s->names[i]);
    }
    s->attached = 0;
    return 0;
}

static void
dealloc(SlotCore *s)
{
    PyObject_GC_UnTrack(s);
    clear(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

#define M(name, type, field) {name, type, offsetof(SlotCore, field), 0, NULL}
static PyMemberDef members[] = {
    M("_mm", T_OBJECT, mm),
    M("_base", T_PYSSIZET, base),
    M("_seq", T_ULONGLONG, seq),
    M("_t0", T_DOUBLE, t0),
    M("_wall", T_DOUBLE, wall),
    M("wall0", T_DOUBLE, wall0),
    M("_deadline", T_DOUBLE, deadline),
    M("_length", T_LONGLONG, length),
    M("_start", T_DOUBLE, start),
    M("_cpu0", T_DOUBLE, cpu0),
    M("_cpu_at", T_DOUBLE, cpu_at),
    M("_cpu_each", T_DOUBLE, cpu_each),
    M("_cpu_n", T_LONGLONG, cpu_n),
    M("_rss_at", T_DOUBLE, rss_at),
    M("_rss", T_LONGLONG, rss),
    M("_peak", T_LONGLONG, peak),
    M("_requests", T_LONGLONG, requests),
    {NULL},
};

static PyGetSetDef getset[] = {
    {"last", (getter)get_last, (setter)set_last, "the last response phase: (seconds, CPU seconds)", NULL},
    {NULL},
};

static PyMethodDef methods[] = {
    {"_attach", (PyCFunction)attach, METH_VARARGS,
     "_attach(offsets, names_size, slot_size, cpu_every, rss_every, encode_names, read_rss): the layout"},
    {"begin_request", (PyCFunction)(void (*)(void))begin_request, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"reading", (PyCFunction)(void (*)(void))reading, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"rest", (PyCFunction)rest, METH_NOARGS, NULL},
    {"end_response", (PyCFunction)(void (*)(void))end_response, METH_FASTCALL | METH_KEYWORDS, NULL},
    {NULL},
};

static PyTypeObject SlotCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fcgipool.scoreboard._cslot.SlotCore",
    .tp_doc = "The scoreboard slot's per-request writes (see fcgipool.scoreboard.writer).",
    .tp_basicsize = sizeof(SlotCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)dealloc,
    .tp_traverse = (traverseproc)traverse,
    .tp_clear = (inquiry)clear,
    .tp_members = members,
    .tp_getset = getset,
    .tp_methods = methods,
};

/* For fcgipool._crequestlog (a capsule): a request's row reads these without attribute lookups. -1, and no
 * exception, when obj is not a C slot. */
static int
facts(PyObject *obj, double *start, double *answer, double *cpu, long long *rss)
{
    if (!PyObject_TypeCheck(obj, &SlotCoreType)) {
        return -1;
    }
    SlotCore *s = (SlotCore *)obj;
    *start = s->wall0;
    *answer = s->last_answer;
    *cpu = s->last_cpu;
    *rss = s->rss;
    return 0;
}

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fcgipool.scoreboard._cslot",
    .m_doc = "The scoreboard slot's per-request writes in C (see fcgipool.scoreboard.writer).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__cslot(void)
{
    if (PyType_Ready(&SlotCoreType) < 0) {
        return NULL;
    }
    empty_str = PyUnicode_New(0, 0);
    if (empty_str == NULL) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&SlotCoreType);
    if (PyModule_AddObject(m, "SlotCore", (PyObject *)&SlotCoreType) < 0) {
        Py_DECREF(&SlotCoreType);
        Py_DECREF(m);
        return NULL;
    }
    PyObject *capsule = PyCapsule_New((void *)facts, "fcgipool.scoreboard._cslot.facts", NULL);
    if (capsule == NULL || PyModule_AddObject(m, "facts", capsule) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
