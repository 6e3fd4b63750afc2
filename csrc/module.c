/* module.c: the ftmap._core module: multi-phase init, per-interpreter state, shared helpers.
 *
 * The module declares Py_mod_gil = Py_MOD_GIL_NOT_USED (importing it leaves the GIL off on a
 * free-threaded build: tests/unit/test_core_module.py checks) and
 * Py_MOD_PER_INTERPRETER_GIL_SUPPORTED: it has no static mutable state, every type is a heap
 * type owned by the module, and every Python object it uses is imported per interpreter.
 */
#include "ftmap_core.h"

#include <stdarg.h>

/* Imports module_name and stores its attribute attr_name as a strong reference in *out. */
static int
import_attr(const char *module_name, const char *attr_name, PyObject **out)
{
    PyObject *module = PyImport_ImportModule(module_name);
    if (module == NULL) {
        return -1;
    }
    *out = PyObject_GetAttrString(module, attr_name);
    Py_DECREF(module);
    return *out == NULL ? -1 : 0;
}

static int
core_exec(PyObject *module)
{
    ftmap_state *st = ftmap_state_of_module(module);

#define IMPORT(module_name, attr)                                                                  \
    if (import_attr(module_name, #attr, &st->attr) < 0) {                                         \
        return -1;                                                                                 \
    }
    IMPORT("ftmap._errors", ConcurrentMapError)
    IMPORT("ftmap._errors", ConcurrentWriteError)
    IMPORT("ftmap._errors", ConcurrentReadWriteError)
    IMPORT("ftmap._errors", ConcurrentIterationError)
    IMPORT("ftmap._errors", RecursiveUpdateError)
    IMPORT("ftmap._errors", ThreadInfo)
    IMPORT("ftmap._markers", MISSING)
    IMPORT("ftmap._markers", DELETE)
#undef IMPORT

#define RUN_PART(name)                                                                             \
    if (ftmap_##name##_exec(module, st) < 0) {                                                     \
        return -1;                                                                                 \
    }
    FTMAP_PARTS(RUN_PART)
#undef RUN_PART

    /* What this build is, for ftmap._impl's report and the tests. */
    PyObject *info = Py_BuildValue(
        "{s:O,s:O,s:s}",
        "free_threaded", FTMAP_FREE_THREADED ? Py_True : Py_False,
#ifdef FTMAP_TEST_HOOKS
        "test_hooks", Py_True,
#else
        "test_hooks", Py_False,
#endif
#ifdef FTMAP_SANITIZER
        "sanitizer", FTMAP_SANITIZER
#else
        "sanitizer", ""
#endif
    );
    if (info == NULL) {
        return -1;
    }
    int rc = PyModule_AddObjectRef(module, "build_info", info);
    Py_DECREF(info);
    return rc;
}

static int
core_traverse(PyObject *module, visitproc visit, void *arg)
{
    ftmap_state *st = ftmap_state_of_module(module);
    if (st == NULL) {
        return 0;
    }
#define VISIT(name) Py_VISIT(st->name);
    FTMAP_STATE_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int
core_clear(PyObject *module)
{
    ftmap_state *st = ftmap_state_of_module(module);
    if (st == NULL) {
        return 0;
    }
#define CLEAR(name) Py_CLEAR(st->name);
    FTMAP_STATE_OBJECTS(CLEAR)
#undef CLEAR
    return 0;
}

static void
core_free(void *module)
{
    (void)core_clear((PyObject *)module);
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, (void *)core_exec},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
    {0, NULL},
};

PyDoc_STRVAR(core_doc,
             "ftmap's C core: the hot paths of the maps, FNV hashing and shard placement.\n\n"
             "Use the public names in ftmap; ftmap.implementation says whether this module is in "
             "use and ftmap.implementation_reason why.");

PyModuleDef ftmap_core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ftmap._core",
    .m_doc = core_doc,
    .m_size = sizeof(ftmap_state),
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

PyMODINIT_FUNC PyInit__core(void); /* the one exported symbol */

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&ftmap_core_module);
}

/* -- helpers shared by every part ------------------------------------------------------------ */

PyObject *
ftmap_raise(PyObject *exc_class, const char *format, ...)
{
    va_list va;
    va_start(va, format);
    PyObject *args = Py_VaBuildValue(format, va);
    va_end(va);
    if (args == NULL) {
        return NULL;
    }
    if (!PyTuple_Check(args)) {
        PyObject *tuple = PyTuple_Pack(1, args);
        Py_DECREF(args);
        if (tuple == NULL) {
            return NULL;
        }
        args = tuple;
    }
    PyObject *exc = PyObject_Call(exc_class, args, NULL);
    Py_DECREF(args);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

PyObject *
ftmap_reduce(const char *name, PyObject *args, PyObject *kwargs)
{
    PyObject *rebuild = NULL;
    PyObject *result = NULL;
    if (args == NULL) {
        goto done;
    }
    /* Imported on each call: pickling is cold, and ftmap._impl imports this module. */
    if (import_attr("ftmap._impl", "rebuild", &rebuild) < 0) {
        goto done;
    }
    if (kwargs == NULL) {
        result = Py_BuildValue("(O(sO))", rebuild, name, args);
    }
    else {
        result = Py_BuildValue("(O(sOO))", rebuild, name, args, kwargs);
    }
done:
    Py_XDECREF(rebuild);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    return result;
}
