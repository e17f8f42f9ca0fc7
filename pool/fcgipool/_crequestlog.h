/* What the two C files of fcgipool._crequestlog share (see _crequestlog.c). */
#ifndef FCGIPOOL_CREQUESTLOG_H
#define FCGIPOOL_CREQUESTLOG_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject *method, *uri, *route, *status, *outcomes;
    double after, start, answer, cpu;
    long long rss;
} Row;

/* A batch's rows share their key objects, so that format() calls prefix() once per distinct key: add() swaps a
 * row's (method, uri, route, status) for equal objects it keeps, the last KEYS distinct keys looked up by value.
 * Rows told apart by identity with the previous row called prefix() (Python) whenever the key changed: with four
 * routes mixed, format took 0.173 us a row, now 0.065; with a fresh method string per row (the Python params
 * decoder) 0.214, now 0.055 (bench/experiments/requestlog_format.py --mixed / --fresh; docs/benchmarks.md). */
#define KEYS 16
#define KEY_FIELDS 4

/* a growing byte buffer */
typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Out;

/* The lines are formatted into a buffer kept from one batch to the next and written from it through a buffer view:
 * no 4 kB .. 128 kB regrowth and no 80 kB bytes copy per batch (format 0.062 -> 0.054 us a row). Unless a batch
 * made it bigger than this: */
#define KEEP_TEXT_BYTES (1 << 20)

typedef struct {
    PyObject_HEAD
    Row *rows;
    Py_ssize_t n, cap;
    PyObject *keys[KEYS][KEY_FIELDS];  /* strong references; an empty entry is all NULL */
    int last_key, next_key;            /* the last entry used, and the one the next new key replaces */
    Out text;                          /* the last batch's lines, exported by format() as a read-only buffer */
    Py_ssize_t exports;                /* buffer views of text still held: format() may not touch it */
} Rows;

/* _crequestlog.c */
void rl_rows_clear_all(Rows *self);

/* _crequestlog_lines.c */
void rl_keys_clear(Rows *self);
void rl_canonical_key(Rows *self, PyObject **key);
PyObject *rl_format(Rows *self, PyObject *args);

#endif
