/* One frame to many sockets in one call, outside the GIL (transport/offload.py).
 *
 * dup_each(fds) -> dups
 *   int32 in, int32 out: a close-on-exec dup() of each fd, or -errno (-EMFILE: out of
 *   file descriptors). Called on the event loop's thread, where sockets are closed, so
 *   each dup is of the socket the caller means.
 *
 * send_each(fds, data) -> results
 *   fds:     int32 file descriptors (native order), e.g. array("i").tobytes();
 *            each is CLOSED after its send: the caller passes dup()s it owns, so a
 *            socket the event loop closes meanwhile cannot hand its number to another.
 *   data:    the bytes every socket gets.
 *   results: int32 per fd, the bytes sent (a short count: the socket buffer filled)
 *            or -errno (-EAGAIN: nothing sent; -EPIPE, -ECONNRESET: the peer is gone).
 *
 * send_own(fds, datas) -> results
 *   The same, but fds[i] gets datas[i] (a list of bytes, one per fd): a burst's acks.
 *
 * The sends are non-blocking (MSG_DONTWAIT) and never raise SIGPIPE (MSG_NOSIGNAL).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

static PyObject *dup_each(PyObject *self, PyObject *args) {
    Py_buffer fds;
    if (!PyArg_ParseTuple(args, "y*:dup_each", &fds)) {
        return NULL;
    }
    PyObject *out = NULL;
    if (fds.len % (Py_ssize_t)sizeof(int) != 0) {
        PyErr_SetString(PyExc_ValueError, "fds must be whole int32s");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, fds.len);
    if (out == NULL) {
        goto done;
    }
    int *dups = (int *)PyBytes_AS_STRING(out);
    const int *fd = (const int *)fds.buf;
    Py_ssize_t n = fds.len / (Py_ssize_t)sizeof(int);
    for (Py_ssize_t i = 0; i < n; i++) {
        int d = fcntl(fd[i], F_DUPFD_CLOEXEC, 0);
        dups[i] = d < 0 ? -errno : d;
    }
done:
    PyBuffer_Release(&fds);
    return out;
}

static PyObject *send_each(PyObject *self, PyObject *args) {
    Py_buffer fds, data;
    if (!PyArg_ParseTuple(args, "y*y*:send_each", &fds, &data)) {
        return NULL;
    }
    PyObject *out = NULL;
    if (fds.len % (Py_ssize_t)sizeof(int) != 0) {
        PyErr_SetString(PyExc_ValueError, "fds must be whole int32s");
        goto done;
    }
    Py_ssize_t n = fds.len / (Py_ssize_t)sizeof(int);
    out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int));
    if (out == NULL) {
        goto done;
    }
    int *results = (int *)PyBytes_AS_STRING(out);
    const int *fd = (const int *)fds.buf;
    const char *buf = (const char *)data.buf;
    size_t len = (size_t)data.len;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        ssize_t sent = send(fd[i], buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        results[i] = sent < 0 ? -errno : (int)sent;
        close(fd[i]);
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&fds);
    PyBuffer_Release(&data);
    return out;
}

static PyObject *send_own(PyObject *self, PyObject *args) {
    Py_buffer fds;
    PyObject *datas;
    if (!PyArg_ParseTuple(args, "y*O!:send_own", &fds, &PyList_Type, &datas)) {
        return NULL;
    }
    PyObject *out = NULL;
    const char **bufs = NULL;
    Py_ssize_t *lens = NULL;
    Py_ssize_t n = fds.len / (Py_ssize_t)sizeof(int);
    if (fds.len % (Py_ssize_t)sizeof(int) != 0 || PyList_GET_SIZE(datas) != n) {
        PyErr_SetString(PyExc_ValueError, "fds must be whole int32s, one per data");
        goto done;
    }
    bufs = PyMem_New(const char *, n ? n : 1);
    lens = PyMem_New(Py_ssize_t, n ? n : 1);
    if (bufs == NULL || lens == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* The list is the caller's own and no other thread touches it: its bytes stay alive
     * (and immutable) while the GIL is released. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(datas, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "datas must be bytes");
            goto done;
        }
        bufs[i] = PyBytes_AS_STRING(item);
        lens[i] = PyBytes_GET_SIZE(item);
    }
    out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int));
    if (out == NULL) {
        goto done;
    }
    int *results = (int *)PyBytes_AS_STRING(out);
    const int *fd = (const int *)fds.buf;
    Py_INCREF(datas);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        ssize_t sent = send(fd[i], bufs[i], (size_t)lens[i], MSG_DONTWAIT | MSG_NOSIGNAL);
        results[i] = sent < 0 ? -errno : (int)sent;
        close(fd[i]);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(datas);
done:
    PyMem_Free(bufs);
    PyMem_Free(lens);
    PyBuffer_Release(&fds);
    return out;
}

static PyMethodDef methods[] = {
    {"dup_each", dup_each, METH_VARARGS, "dup_each(fds) -> int32 dups (or -errno) of each fd."},
    {"send_each", send_each, METH_VARARGS,
     "send_each(fds, data) -> int32 results: data sent to each fd, which is then closed."},
    {"send_own", send_own, METH_VARARGS,
     "send_own(fds, datas) -> int32 results: datas[i] sent to fds[i], which is then closed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sendfan", "One frame to many sockets outside the GIL.", -1, methods,
};

PyMODINIT_FUNC PyInit__sendfan(void) { return PyModule_Create(&module); }
