/* FastCGI PARAMS decoding in C: fcgipool.protocol.pairs.decode_params without the interpreter.
 *
 * Why: decoding the ~21 pairs nginx sends was 4-5 us of a worker's ~27 us per request in `make bench`; with
 * it in C the worker stops being the slowest link of the chain, and nginx stops preempting it at every answer
 * (docs/benchmarks.md, 2026-11-27). Pure: no I/O, no state but a cache of immutable strings.
 *
 * decode_params(data: bytes) -> dict[str, str] | None
 *   The same mapping as the Python decoder (latin-1, later duplicates win), or None when the stream is
 *   truncated: the caller then runs the Python decoder, which raises the precise RemoteProtocolError. The
 *   error messages live in one place.
 *
 * Most names and many values repeat from one request to the next (SERVER_SOFTWARE, HTTP_HOST, the same
 * few URIs), so strings up to CACHE_MAX_LEN bytes go through a direct-mapped cache: a hit is a hash and a
 * memcmp instead of a new object, and the dict insert reuses the string's cached hash.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define CACHE_SLOTS 1024 /* a power of two */
#define CACHE_MAX_LEN 128

static PyObject *cache[CACHE_SLOTS];

static PyObject *
latin1_str(const unsigned char *p, Py_ssize_t n)
{
    if (n > CACHE_MAX_LEN) {
        return PyUnicode_DecodeLatin1((const char *)p, n, NULL);
    }
    /* FNV-1a over the bytes and the length */
    uint32_t h = 2166136261u ^ (uint32_t)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 16777619u;
    }
    PyObject **slot = &cache[h & (CACHE_SLOTS - 1)];
    PyObject *s = *slot;
    /* every cached string was made from latin-1, so it is 1-byte kind and its data are those bytes */
    if (s != NULL && PyUnicode_GET_LENGTH(s) == n && memcmp(PyUnicode_1BYTE_DATA(s), p, (size_t)n) == 0) {
        Py_INCREF(s);
        return s;
    }
    s = PyUnicode_DecodeLatin1((const char *)p, n, NULL);
    if (s == NULL) {
        return NULL;
    }
    Py_INCREF(s);
    Py_XSETREF(*slot, s);
    return s;
}

/* A length at p (1 byte below 128, else 4 bytes with the high bit set); -1 if it runs past end. */
static Py_ssize_t
read_length(const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *p = *pp;
    if (p >= end) {
        return -1;
    }
    if (p[0] < 0x80) {
        *pp = p + 1;
        return p[0];
    }
    if (end - p < 4) {
        return -1;
    }
    *pp = p + 4;
    return (Py_ssize_t)((((uint32_t)p[0] & 0x7f) << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]);
}

static PyObject *
decode_params(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *p = view.buf;
    const unsigned char *end = p + view.len;
    PyObject *params = PyDict_New();
    if (params == NULL) {
        goto fail;
    }
    while (p < end) {
        Py_ssize_t nlen = read_length(&p, end);
        Py_ssize_t vlen = nlen < 0 ? -1 : read_length(&p, end);
        if (vlen < 0 || nlen > end - p || vlen > end - p - nlen) {
            Py_DECREF(params);
            PyBuffer_Release(&view);
            Py_RETURN_NONE; /* truncated: the Python decoder says where and how */
        }
        PyObject *name = latin1_str(p, nlen);
        if (name == NULL) {
            goto fail;
        }
        PyObject *value = latin1_str(p + nlen, vlen);
        if (value == NULL) {
            Py_DECREF(name);
            goto fail;
        }
        int rc = PyDict_SetItem(params, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (rc < 0) {
            goto fail;
        }
        p += nlen + vlen;
    }
    PyBuffer_Release(&view);
    return params;
fail:
    Py_XDECREF(params);
    PyBuffer_Release(&view);
    return NULL;
}

static PyObject *
cache_clear(PyObject *module, PyObject *unused)
{
    for (int i = 0; i < CACHE_SLOTS; i++) {
        Py_CLEAR(cache[i]);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode_params", decode_params, METH_O,
     "decode_params(data) -> dict[str, str] | None: a PARAMS stream to {name: value} in latin-1 (later duplicates "
     "win); None if it is truncated."},
    {"cache_clear", cache_clear, METH_NOARGS, "Drop the cached strings (tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fcgipool.protocol._cparams",
    .m_doc = "FastCGI PARAMS decoding in C (see fcgipool.protocol.pairs).",
    .m_size = -1, /* the string cache is process-wide: the module is not for sub-interpreters */
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__cparams(void)
{
    return PyModule_Create(&module_def);
}
