/* fnv.c: fnv1_32, fnv1a_32, fnv1a_64 and shard_of, at C speed.
 *
 * Same results and same errors as the Python reference, src/ftmap/_fnv.py: the input is any
 * bytes-like object (the buffer protocol; a non-contiguous buffer is hashed as its bytes in
 * C order, as bytes(memoryview(x)) would give them), anything else raises
 * TypeError("<name>() argument must be a bytes-like object, not '<type>'").
 */
#include "ftmap_core.h"
#include "ftmap_fnv.h"

typedef struct {
    Py_buffer view;    /* the object's own buffer, when it gives a contiguous one */
    PyObject *copy;    /* else: a bytes copy in C order (view is then released) */
    const unsigned char *data;
    size_t size;
} fnv_input;

static int
fnv_input_get(PyObject *obj, const char *fname, fnv_input *in)
{
    in->copy = NULL;
    if (!PyObject_CheckBuffer(obj)) {
        PyObject *type_name = PyType_GetName(Py_TYPE(obj));
        if (type_name != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() argument must be a bytes-like object, not %R",
                         fname, type_name);
            Py_DECREF(type_name);
        }
        return -1;
    }
    if (PyObject_GetBuffer(obj, &in->view, PyBUF_SIMPLE) == 0) {
        in->data = (const unsigned char *)in->view.buf;
        in->size = (size_t)in->view.len;
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_BufferError)) {
        return -1;
    }
    /* Not contiguous (a strided memoryview): hash its bytes in C order. Cold path. */
    PyErr_Clear();
    PyObject *view = PyMemoryView_FromObject(obj);
    if (view == NULL) {
        return -1;
    }
    in->copy = PyObject_CallMethod(view, "tobytes", NULL);
    Py_DECREF(view);
    if (in->copy == NULL) {
        return -1;
    }
    in->data = (const unsigned char *)PyBytes_AS_STRING(in->copy);
    in->size = (size_t)PyBytes_GET_SIZE(in->copy);
    return 0;
}

static void
fnv_input_release(fnv_input *in)
{
    if (in->copy != NULL) {
        Py_CLEAR(in->copy);
    }
    else {
        PyBuffer_Release(&in->view);
    }
}

static PyObject *
fnv1_32(PyObject *module, PyObject *data)
{
    (void)module;
    fnv_input in;
    if (fnv_input_get(data, "fnv1_32", &in) < 0) {
        return NULL;
    }
    uint32_t h = ftmap_fnv1_32(in.data, in.size);
    fnv_input_release(&in);
    return PyLong_FromUnsignedLong(h);
}

static PyObject *
fnv1a_32(PyObject *module, PyObject *data)
{
    (void)module;
    fnv_input in;
    if (fnv_input_get(data, "fnv1a_32", &in) < 0) {
        return NULL;
    }
    uint32_t h = ftmap_fnv1a_32(in.data, in.size);
    fnv_input_release(&in);
    return PyLong_FromUnsignedLong(h);
}

static PyObject *
fnv1a_64(PyObject *module, PyObject *data)
{
    (void)module;
    fnv_input in;
    if (fnv_input_get(data, "fnv1a_64", &in) < 0) {
        return NULL;
    }
    uint64_t h = ftmap_fnv1a_64(in.data, in.size);
    fnv_input_release(&in);
    return PyLong_FromUnsignedLongLong(h);
}

/* shard_of(key, bits): the same checks, in the same order, as _fnv.shard_of. */
static PyObject *
shard_of(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "shard_of() takes exactly 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *bits_obj = args[1];
    if (PyBool_Check(bits_obj) || !PyLong_Check(bits_obj)) {
        PyObject *type_name = PyType_GetName(Py_TYPE(bits_obj));
        if (type_name != NULL) {
            PyErr_Format(PyExc_TypeError, "bits must be an int, not %U", type_name);
            Py_DECREF(type_name);
        }
        return NULL;
    }
    int overflow;
    long bits = PyLong_AsLongAndOverflow(bits_obj, &overflow);
    if (bits == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow || bits < 0 || bits > FTMAP_SHARD_BITS_MAX) {
        PyErr_Format(PyExc_ValueError, "bits must be from 0 to %d, not %R", FTMAP_SHARD_BITS_MAX,
                     bits_obj);
        return NULL;
    }
    Py_hash_t hash = PyObject_Hash(args[0]);
    if (hash == -1) {
        return NULL;
    }
    return PyLong_FromUnsignedLong(ftmap_shard_of_hash(hash, (unsigned int)bits));
}

PyDoc_STRVAR(fnv1_32_doc, "fnv1_32(data, /)\n--\n\nFNV-1, 32 bits, over a bytes-like object.");
PyDoc_STRVAR(fnv1a_32_doc, "fnv1a_32(data, /)\n--\n\nFNV-1a, 32 bits, over a bytes-like object.");
PyDoc_STRVAR(fnv1a_64_doc, "fnv1a_64(data, /)\n--\n\nFNV-1a, 64 bits, over a bytes-like object.");
PyDoc_STRVAR(shard_of_doc,
             "shard_of(key, bits, /)\n--\n\n"
             "The shard in [0, 2**bits) of key: FNV-1a 64 over the 8 bytes of hash(key), the\n"
             "MurmurHash3 fmix64 finaliser, xor-folded to 32 bits, top bits. bits: 0 to 20.");

static PyMethodDef fnv_methods[] = {
    {"fnv1_32", fnv1_32, METH_O, fnv1_32_doc},
    {"fnv1a_32", fnv1a_32, METH_O, fnv1a_32_doc},
    {"fnv1a_64", fnv1a_64, METH_O, fnv1a_64_doc},
    {"shard_of", _PyCFunction_CAST(shard_of), METH_FASTCALL, shard_of_doc},
    {NULL, NULL, 0, NULL},
};

int
ftmap_fnv_exec(PyObject *module, ftmap_state *st)
{
    (void)st;
    if (PyModule_AddFunctions(module, fnv_methods) < 0) {
        return -1;
    }
    return PyModule_AddIntConstant(module, "SHARD_BITS_MAX", FTMAP_SHARD_BITS_MAX);
}
