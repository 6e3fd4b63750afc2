/* published_ref.c: _PublishedRef and _Payload, the test types for ftmap_ref.h.
 *
 * Not public API (underscore names). _PublishedRef is one ftmap_ref with Python methods, so the
 * use-after-free stress test (tests/stress/test_core_ref_stress.py) and the cost benchmark
 * (benchmarks/core_ref.py) run from Python. _Payload is an object whose contents say whether it
 * is intact: serial, check == ~serial, and a magic word that its deallocator overwrites, so a
 * reader that ends up with a freed (or freed and reused) object sees the wrong type or the wrong
 * contents.
 *
 * Built with FTMAP_TEST_HOOKS (make test, make tsan; never a user's pip install) it also has the
 * deliberately naive reader (load, then Py_INCREF) that the stress test must catch, and a plain
 * load for the cost comparison.
 */
#include "ftmap_core.h"
#include "ftmap_ref.h"

#define PAYLOAD_LIVE 0x4C495645u /* "LIVE" */
#define PAYLOAD_DEAD 0xDEADDEADu
/* Bytes objects kept alive by the churn ring: allocated and freed between publishes so that
 * freed payload blocks are reused by objects of another type (same heap, same size class). */
#define CHURN_RING 64
#define CHURN_BYTES 7

typedef struct {
    PyObject_HEAD
    uint64_t serial; /* fixed at construction */
    uint64_t check;  /* fixed at construction: ~serial; zeroed by the deallocator */
    uint32_t magic;  /* fixed at construction: PAYLOAD_LIVE; PAYLOAD_DEAD once deallocated */
} PayloadObject;

typedef struct {
    PyObject_HEAD
    ftmap_ref ref;      /* published: replaced by publish/exchange/compare_and_set from any
                         * thread; loaded by load/check_many from any thread (ftmap_ref_load) */
    ftmap_state *state; /* fixed at construction */
} PublishedRefObject;

/* -- _Payload -------------------------------------------------------------------------------- */

static PyObject *
payload_create(PyTypeObject *type, uint64_t serial)
{
    PayloadObject *self = (PayloadObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->serial = serial;
    self->check = ~serial;
    self->magic = PAYLOAD_LIVE;
    return (PyObject *)self;
}

static PyObject *
payload_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    unsigned long long serial;
    static char *kwlist[] = {"serial", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "K:_Payload", kwlist, &serial)) {
        return NULL;
    }
    return payload_create(type, (uint64_t)serial);
}

static void
payload_dealloc(PyObject *op)
{
    PayloadObject *self = (PayloadObject *)op;
    PyTypeObject *type = Py_TYPE(op);
    /* Poison: a reader holding no reference that looks at this memory afterwards (until the
     * block is reused) sees a dead payload. */
    self->magic = PAYLOAD_DEAD;
    self->check = 0;
    type->tp_free(op);
    Py_DECREF(type);
}

static inline int
payload_intact(PayloadObject *p)
{
    return p->magic == PAYLOAD_LIVE && p->check == ~p->serial;
}

static PyObject *
payload_valid(PyObject *op, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(payload_intact((PayloadObject *)op));
}

static PyObject *
payload_get_serial(PyObject *op, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(((PayloadObject *)op)->serial);
}

static PyObject *
payload_repr(PyObject *op)
{
    PayloadObject *self = (PayloadObject *)op;
    return PyUnicode_FromFormat("_Payload(%llu)", (unsigned long long)self->serial);
}

static PyMethodDef payload_methods[] = {
    {"valid", payload_valid, METH_NOARGS, "True if the contents are intact."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef payload_getset[] = {
    {"serial", payload_get_serial, NULL, "the serial it was made with", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot payload_slots[] = {
    {Py_tp_new, payload_new},
    {Py_tp_dealloc, payload_dealloc},
    {Py_tp_repr, payload_repr},
    {Py_tp_methods, payload_methods},
    {Py_tp_getset, payload_getset},
    {Py_tp_doc, "_Payload(serial): a test object that can tell whether it is intact."},
    {0, NULL},
};

static PyType_Spec payload_spec = {
    .name = "ftmap._core._Payload",
    .basicsize = sizeof(PayloadObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = payload_slots,
};

/* -- _PublishedRef --------------------------------------------------------------------------- */

static PyObject *
pref_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *initial = NULL;
    static char *kwlist[] = {"initial", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:_PublishedRef", kwlist, &initial)) {
        return NULL;
    }
    ftmap_state *st = ftmap_state_of_type(type);
    if (st == NULL) {
        return NULL;
    }
    PublishedRefObject *self = (PublishedRefObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->state = st;
    ftmap_ref_init(&self->ref, Py_XNewRef(initial));
    return (PyObject *)self;
}

static int
pref_traverse(PyObject *op, visitproc visit, void *arg)
{
    PublishedRefObject *self = (PublishedRefObject *)op;
    Py_VISIT(Py_TYPE(op));
    ftmap_ref_visit(&self->ref);
    return 0;
}

static int
pref_clear(PyObject *op)
{
    ftmap_ref_clear(&((PublishedRefObject *)op)->ref);
    return 0;
}

static void
pref_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)pref_clear(op);
    type->tp_free(op);
    Py_DECREF(type);
}

static PyObject *
pref_load(PyObject *op, PyObject *unused)
{
    (void)unused;
    PyObject *v = ftmap_ref_load(&((PublishedRefObject *)op)->ref);
    return v == NULL ? Py_NewRef(Py_None) : v;
}

static PyObject *
pref_publish(PyObject *op, PyObject *obj)
{
    ftmap_ref_publish(&((PublishedRefObject *)op)->ref, Py_NewRef(obj));
    Py_RETURN_NONE;
}

static PyObject *
pref_exchange(PyObject *op, PyObject *obj)
{
    PyObject *old = ftmap_ref_exchange(&((PublishedRefObject *)op)->ref, Py_NewRef(obj));
    return old == NULL ? Py_NewRef(Py_None) : old;
}

static PyObject *
pref_compare_and_set(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "compare_and_set(expected, new) takes 2 arguments");
        return NULL;
    }
    PyObject *new_obj = Py_NewRef(args[1]);
    if (ftmap_ref_cas(&((PublishedRefObject *)op)->ref, args[0], new_obj)) {
        Py_DECREF(args[0]); /* the slot's reference to expected is now ours */
        Py_RETURN_TRUE;
    }
    Py_DECREF(new_obj);
    Py_RETURN_FALSE;
}

static int
parse_count(PyObject *arg, Py_ssize_t *n)
{
    *n = PyLong_AsSsize_t(arg);
    if (*n == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (*n < 0) {
        PyErr_SetString(PyExc_ValueError, "the count must not be negative");
        return -1;
    }
    return 0;
}

/* publish_many(first_serial, n, churn=False): publishes n fresh payloads with serials
 * first_serial, first_serial + 1, ...; returns the next serial. With churn, allocates and frees
 * bytes objects of the payload's size class in between. */
static PyObject *
pref_publish_many(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    PublishedRefObject *self = (PublishedRefObject *)op;
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "publish_many(first_serial, n, churn=False)");
        return NULL;
    }
    unsigned long long serial = PyLong_AsUnsignedLongLong(args[0]);
    if (serial == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t n;
    if (parse_count(args[1], &n) < 0) {
        return NULL;
    }
    int churn = nargs == 3 ? PyObject_IsTrue(args[2]) : 0;
    if (churn < 0) {
        return NULL;
    }
    PyObject *ring[CHURN_RING] = {NULL};
    PyTypeObject *payload_type = (PyTypeObject *)self->state->PayloadType;
    for (Py_ssize_t i = 0; i < n; i++, serial++) {
        PyObject *p = payload_create(payload_type, (uint64_t)serial);
        if (p == NULL) {
            goto error;
        }
        ftmap_ref_publish(&self->ref, p);
        if (churn) {
            PyObject *b = PyBytes_FromStringAndSize(NULL, CHURN_BYTES);
            if (b == NULL) {
                goto error;
            }
            memset(PyBytes_AS_STRING(b), 0x5A, CHURN_BYTES);
            Py_XSETREF(ring[i % CHURN_RING], b);
        }
    }
    for (int i = 0; i < CHURN_RING; i++) {
        Py_XDECREF(ring[i]);
    }
    return PyLong_FromUnsignedLongLong(serial);
error:
    for (int i = 0; i < CHURN_RING; i++) {
        Py_XDECREF(ring[i]);
    }
    return NULL;
}

typedef PyObject *(*loader)(ftmap_ref *);

/* n loads, each checked: a payload of the exact type, intact, and (if monotonic) a serial no
 * lower than the last one this call saw. Returns (wrong_type, broken, backwards, empty). */
static PyObject *
check_many(PublishedRefObject *self, PyObject *const *args, Py_ssize_t nargs, loader load)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "check_many(n, monotonic=False)");
        return NULL;
    }
    Py_ssize_t n;
    if (parse_count(args[0], &n) < 0) {
        return NULL;
    }
    int monotonic = nargs == 2 ? PyObject_IsTrue(args[1]) : 0;
    if (monotonic < 0) {
        return NULL;
    }
    PyTypeObject *payload_type = (PyTypeObject *)self->state->PayloadType;
    Py_ssize_t wrong_type = 0, broken = 0, backwards = 0, empty = 0;
    uint64_t last = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = load(&self->ref);
        if (v == NULL) {
            empty++;
            continue;
        }
        if (!Py_IS_TYPE(v, payload_type)) {
            wrong_type++;
        }
        else {
            PayloadObject *p = (PayloadObject *)v;
            if (!payload_intact(p)) {
                broken++;
            }
            else {
                if (monotonic && p->serial < last) {
                    backwards++;
                }
                last = p->serial;
            }
        }
        Py_DECREF(v);
    }
    return Py_BuildValue("(nnnn)", wrong_type, broken, backwards, empty);
}

static PyObject *
pref_check_many(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return check_many((PublishedRefObject *)op, args, nargs, ftmap_ref_load);
}

/* load_many(n): n safe loads and releases, unchecked: the cost benchmark's loop. */
static PyObject *
pref_load_many(PyObject *op, PyObject *arg)
{
    PublishedRefObject *self = (PublishedRefObject *)op;
    Py_ssize_t n;
    if (parse_count(arg, &n) < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(ftmap_ref_load(&self->ref));
    }
    Py_RETURN_NONE;
}

/* load_cached_many(n): n loads through a cache, as a per-thread handle does. */
static PyObject *
pref_load_cached_many(PyObject *op, PyObject *arg)
{
    PublishedRefObject *self = (PublishedRefObject *)op;
    Py_ssize_t n;
    if (parse_count(arg, &n) < 0) {
        return NULL;
    }
    PyObject *cache = NULL;
    Py_ssize_t seen = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        seen += ftmap_ref_load_cached(&self->ref, &cache) != NULL;
    }
    Py_XDECREF(cache);
    return PyLong_FromSsize_t(seen);
}

#ifdef FTMAP_TEST_HOOKS
/* The deliberately naive reader: load, then incref. A use after free under concurrent publishing;
 * exists only so that the stress test can prove it catches it. */
static PyObject *
naive_ref_load(ftmap_ref *r)
{
    PyObject *v = (PyObject *)ftmap_atomic_load_ptr_acquire(&r->_obj);
    Py_XINCREF(v);
    return v;
}

static PyObject *
pref_naive_load(PyObject *op, PyObject *unused)
{
    (void)unused;
    PyObject *v = naive_ref_load(&((PublishedRefObject *)op)->ref);
    return v == NULL ? Py_NewRef(Py_None) : v;
}

static PyObject *
pref_naive_check_many(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return check_many((PublishedRefObject *)op, args, nargs, naive_ref_load);
}

/* plain_load_many(n): the naive load + incref + decref, for the cost comparison only (safe
 * when no other thread publishes meanwhile). */
static PyObject *
pref_plain_load_many(PyObject *op, PyObject *arg)
{
    PublishedRefObject *self = (PublishedRefObject *)op;
    Py_ssize_t n;
    if (parse_count(arg, &n) < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(naive_ref_load(&self->ref));
    }
    Py_RETURN_NONE;
}
#endif

static PyMethodDef pref_methods[] = {
    {"load", pref_load, METH_NOARGS, "A new reference to the published object (None if empty)."},
    {"publish", pref_publish, METH_O, "Publish obj, releasing the old object."},
    {"exchange", pref_exchange, METH_O, "Publish obj and return the old object (None if empty)."},
    {"compare_and_set", _PyCFunction_CAST(pref_compare_and_set), METH_FASTCALL,
     "compare_and_set(expected, new): publish new if expected (by identity) is published."},
    {"publish_many", _PyCFunction_CAST(pref_publish_many), METH_FASTCALL,
     "publish_many(first_serial, n, churn=False) -> next serial: n fresh _Payloads."},
    {"check_many", _PyCFunction_CAST(pref_check_many), METH_FASTCALL,
     "check_many(n, monotonic=False) -> (wrong_type, broken, backwards, empty)."},
    {"load_many", pref_load_many, METH_O, "load_many(n): n loads and releases (benchmark)."},
    {"load_cached_many", pref_load_cached_many, METH_O,
     "load_cached_many(n): n loads through a per-thread cache (benchmark)."},
#ifdef FTMAP_TEST_HOOKS
    {"naive_load", pref_naive_load, METH_NOARGS, "TEST ONLY: load then incref (unsafe)."},
    {"naive_check_many", _PyCFunction_CAST(pref_naive_check_many), METH_FASTCALL,
     "TEST ONLY: check_many with the naive load (unsafe)."},
    {"plain_load_many", pref_plain_load_many, METH_O,
     "TEST ONLY: n naive loads and releases, for the cost comparison (unsafe with writers)."},
#endif
    {NULL, NULL, 0, NULL},
};

static PyType_Slot pref_slots[] = {
    {Py_tp_new, pref_new},
    {Py_tp_dealloc, pref_dealloc},
    {Py_tp_traverse, pref_traverse},
    {Py_tp_clear, pref_clear},
    {Py_tp_methods, pref_methods},
    {Py_tp_doc, "_PublishedRef(initial=None): one ftmap_ref, for tests and benchmarks."},
    {0, NULL},
};

static PyType_Spec pref_spec = {
    .name = "ftmap._core._PublishedRef",
    .basicsize = sizeof(PublishedRefObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = pref_slots,
};

int
ftmap_published_ref_exec(PyObject *module, ftmap_state *st)
{
    st->PayloadType = PyType_FromModuleAndSpec(module, &payload_spec, NULL);
    if (st->PayloadType == NULL || PyModule_AddObjectRef(module, "_Payload", st->PayloadType) < 0) {
        return -1;
    }
    st->PublishedRefType = PyType_FromModuleAndSpec(module, &pref_spec, NULL);
    if (st->PublishedRefType == NULL ||
        PyModule_AddObjectRef(module, "_PublishedRef", st->PublishedRefType) < 0) {
        return -1;
    }
    return 0;
}
