/* The request log's lines, for fcgipool._crequestlog (_crequestlog.c has the Rows type): the table of keys that
 * lets a batch share one prefix() call per distinct key, the growing byte buffer, numbers as text, and format().
 */
#include "_crequestlog.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void
rl_keys_clear(Rows *self)
{
    for (int i = 0; i < KEYS; i++) {
        for (int f = 0; f < KEY_FIELDS; f++) {
            Py_CLEAR(self->keys[i][f]);
        }
    }
}

/* a and b are equal str (or the same object): equal str share kind, length and code units in CPython */
static int
same_text(PyObject *a, PyObject *b)
{
    if (a == b) {
        return 1;
    }
    if (a == NULL || b == NULL || !PyUnicode_CheckExact(a) || !PyUnicode_CheckExact(b)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    int kind = PyUnicode_KIND(a);
    return n == PyUnicode_GET_LENGTH(b) && kind == PyUnicode_KIND(b) &&
           memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)n * (size_t)kind) == 0;
}

static int
key_matches(PyObject *const *entry, PyObject *const *key)
{
    return entry[0] != NULL && same_text(entry[0], key[0]) && same_text(entry[1], key[1]) &&
           same_text(entry[2], key[2]) && same_text(entry[3], key[3]);
}

/* key[] (borrowed) replaced by the kept objects equal to it; a new key is kept in place of the oldest */
void
rl_canonical_key(Rows *self, PyObject **key)
{
    int i = self->last_key;
    if (!key_matches(self->keys[i], key)) {
        for (i = 0; i < KEYS && !key_matches(self->keys[i], key); i++) {
        }
        if (i == KEYS) {
            i = self->next_key;
            self->next_key = (i + 1) % KEYS;
            for (int f = 0; f < KEY_FIELDS; f++) {
                Py_INCREF(key[f]);
                Py_XSETREF(self->keys[i][f], key[f]);
            }
        }
        self->last_key = i;
    }
    for (int f = 0; f < KEY_FIELDS; f++) {
        key[f] = self->keys[i][f];
    }
}

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

PyObject *
rl_format(Rows *self, PyObject *args)
{
    PyObject *prefix_fn, *tail_fn, *no_tasks;
    if (!PyArg_ParseTuple(args, "OOU:format", &prefix_fn, &tail_fn, &no_tasks)) {
        return NULL;
    }
    if (self->exports > 0) {
        PyErr_SetString(PyExc_BufferError, "the last batch's lines are still in use: release them first");
        return NULL;
    }
    if (self->text.cap > KEEP_TEXT_BYTES) {  /* an outsized batch (long task lists): give the memory back */
        PyMem_Free(self->text.buf);
        self->text.buf = NULL, self->text.cap = 0;
    }
    Out o = {self->text.buf, 0, self->text.cap};
    PyObject *prefix = NULL, *result = NULL;
    /* this call's prefixes by key identity: the rows hold their (canonical, see add) key objects meanwhile */
    PyObject *seen_key[KEYS][KEY_FIELDS] = {{NULL}};
    PyObject *seen_prefix[KEYS] = {NULL};
    int seen = 0, seen_next = 0;
    double base = -INFINITY;
    char time_text[40];
    int time_len = 0;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        Row *r = &self->rows[i];
        PyObject *key[KEY_FIELDS] = {r->method, r->uri, r->route, r->status};
        Row *q = i ? &self->rows[i - 1] : NULL;
        if (q == NULL || q->method != r->method || q->uri != r->uri || q->route != r->route || q->status != r->status) {
            int k = 0;
            while (k < seen && memcmp(seen_key[k], key, sizeof key) != 0) {
                k++;
            }
            if (k == seen) {
                PyObject *made = PyObject_CallFunctionObjArgs(prefix_fn, r->method, r->uri, r->route, r->status, NULL);
                if (made == NULL || !PyUnicode_Check(made)) {
                    if (made != NULL) {
                        PyErr_SetString(PyExc_TypeError, "prefix() must return a str");
                        Py_DECREF(made);
                    }
                    goto done;
                }
                if (seen < KEYS) {
                    k = seen++;
                } else {
                    k = seen_next;
                    seen_next = (k + 1) % KEYS;
                    Py_DECREF(seen_prefix[k]);
                }
                memcpy(seen_key[k], key, sizeof key);
                seen_prefix[k] = made;
            }
            prefix = seen_prefix[k];
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
    self->text = o;
    result = PyMemoryView_FromObject((PyObject *)self);  /* the lines where they were formatted: no copy */
done:
    for (int k = 0; k < seen; k++) {
        Py_DECREF(seen_prefix[k]);
    }
    if (result != NULL) {
        rl_rows_clear_all(self);
    } else {  /* the buffer may have moved while growing: keep it, empty */
        self->text.buf = o.buf, self->text.cap = o.cap, self->text.len = 0;
    }
    return result;
}
