/* snapshotmap.c: SnapshotMap's read paths and its per-thread reader, in C.
 *
 * The public classes are thin Python subclasses in src/ftmap/_snapshot_c.py (writes, freeze,
 * history, subscribers, transforms: everything cold stays in Python, sharing the pure module's
 * code). This file holds what issue 11's speed bars and issue 12's scaling need:
 *
 *   SnapshotMapBase     get, m[k], in, len, iter, snapshot(), version, _history, _publish
 *   SnapshotReaderBase  get, r[k], in, len, iter, snapshot(): one thread's view of a map
 *   SnapshotMapHandleBase  the reader's reads, version and map: one thread's handle (writes in
 *                       Python, through the map)
 *
 * The design, in short (README "SnapshotMap", docs/c-core.md):
 *
 * - The current snapshot (an immutable ftmap._snapshot.Snapshot, a dict subclass) is one
 *   ftmap_ref. Writers (Python, under the map's writer lock) build the next snapshot off to the
 *   side and publish it with _publish: an atomic exchange of the history tuple, then of the
 *   current snapshot, then the link of the pending-delivery node. The version is the snapshot's
 *   own attribute, so a reader that has a snapshot has its version and its contents together:
 *   never a version without its contents.
 * - Reads through the map load the snapshot with ftmap_ref_load (safe against a concurrent
 *   publish dropping it; see ftmap_ref.h), look the key up with dict's own C API (dict semantics
 *   for keys: identity first, then ==, NaN included, exceptions from __hash__/__eq__ passed
 *   through), and release the snapshot.
 * - A reader caches the snapshot it last used (ftmap_ref_load_cached): while the map publishes
 *   nothing, a read touches no shared reference count at all, which is what lets readers on
 *   different threads scale (issue 12). Only the reader's owner thread uses the cache; any
 *   other thread reads through the map's path (correct, merely shared), so a reader handed to
 *   another thread stays safe.
 *
 * Locks: none here. The writer lock is Python's (an RLock in SnapshotMap._write); _publish runs
 * under it and runs no user code before its stores are done (see there). No PyMutex anywhere,
 * so no user code can ever run under one.
 *
 * Asynchronous exceptions: C code is never interrupted. An exception can only come out of user
 * code that these functions call (a key's __hash__/__eq__ during a lookup) and is then the
 * lookup's error, exactly as in dict; a __del__ run by releasing a snapshot cannot raise into
 * the caller (CPython reports it as unraisable). _publish is one C call: it happens completely
 * or not at all.
 */
#include "ftmap_core.h"
#include "ftmap_ref.h"

typedef struct {
    PyObject_HEAD
    ftmap_ref current;  /* published: the current Snapshot. Written by _publish (called only by
                         *   SnapshotMap.__init__ and SnapshotMap._write, under the map's writer
                         *   lock) with ftmap_ref_exchange, after `history`; read by anyone with
                         *   ftmap_ref_load (no lock), or ftmap_ref_load_cached by a reader's
                         *   owner thread. Empty (NULL) only before __init__ and after tp_clear. */
    ftmap_ref history;  /* published: a tuple of the last Snapshots, oldest first, the newest
                         *   being `current` (or, during a publish, the one about to become it).
                         *   Written by _publish with ftmap_ref_exchange BEFORE `current`, so a
                         *   thread that loads `current` and then `history` finds the snapshot
                         *   it loaded in the history; read by anyone with ftmap_ref_load. */
    ftmap_state *state; /* fixed at construction */
} SnapshotMapObject;

typedef struct {
    PyObject_HEAD
    PyObject *map;      /* fixed at construction: a strong reference to a SnapshotMapObject */
    PyObject *cache;    /* the owner thread only (read and written without atomics): the
                         *   ftmap_ref_load_cached cache, a strong reference to the snapshot of
                         *   map->current this reader last used (NULL: none yet). Other threads
                         *   never touch it; tp_traverse/tp_clear/tp_dealloc read it when no
                         *   thread can be using the reader (world stopped, or unreachable). */
    int busy;           /* the owner thread only: 1 while an operation holds a BORROWED pointer
                         *   from `cache`. A nested read on the same thread (from a key's
                         *   __eq__, or a __del__ run by releasing the old cached snapshot) then
                         *   takes the shared path and leaves the cache alone, so the borrowed
                         *   pointer of the outer read can never be released under it. */
#if FTMAP_FREE_THREADED
    uintptr_t owner;    /* fixed at construction: _Py_ThreadId() of the thread that made the
                         *   reader. Thread ids are unique among live threads, so at most one
                         *   live thread ever takes the cached path. */
#endif
    ftmap_state *state; /* fixed at construction */
} SnapshotReaderObject;

#define MAP(op) ((SnapshotMapObject *)(op))
#define READER(op) ((SnapshotReaderObject *)(op))

/* -- shared helpers ---------------------------------------------------------------------------- */

static PyObject *
not_initialised(PyObject *self)
{
    PyObject *name = PyType_GetName(Py_TYPE(self));
    if (name != NULL) {
        PyErr_Format(PyExc_RuntimeError, "this %U has no content: its __init__ was never called",
                     name);
        Py_DECREF(name);
    }
    return NULL;
}

/* A new reference to the map's current snapshot, or NULL with an exception set. */
static inline PyObject *
map_load(SnapshotMapObject *self)
{
    PyObject *snap = ftmap_ref_load(&self->current);
    if (snap == NULL) {
        return not_initialised((PyObject *)self);
    }
    return snap;
}

/* KeyError(key), as dict raises it: a tuple key is one argument, not the argument tuple. */
static void
set_key_error(PyObject *key)
{
    PyObject *exc = PyObject_CallOneArg(PyExc_KeyError, key);
    if (exc != NULL) {
        PyErr_SetObject(PyExc_KeyError, exc);
        Py_DECREF(exc);
    }
}

/* The lookups, on a snapshot the caller holds (a strong or a cache-borrowed reference). A
 * Snapshot is an exact ftmap._snapshot.Snapshot: a dict subclass that overrides none of
 * __getitem__, get, __contains__, __len__, __iter__ and defines no __missing__, so dict's own C
 * API gives exactly what its Python methods give. */
static inline PyObject *
snap_get(PyObject *snap, PyObject *key, PyObject *default_value)
{
    PyObject *value;
    int found = PyDict_GetItemRef(snap, key, &value);
    if (found < 0) {
        return NULL;
    }
    return found ? value : Py_NewRef(default_value);
}

static inline PyObject *
snap_subscript(PyObject *snap, PyObject *key)
{
    PyObject *value;
    int found = PyDict_GetItemRef(snap, key, &value);
    if (found == 0) {
        set_key_error(key);
        return NULL;
    }
    return found < 0 ? NULL : value;
}

/* Wrong arguments to a method whose pure-Python twin is a Python function: call the Python
 * function with the same signature and qualified name that the subclass keeps as
 * `_signature_<name>` (src/ftmap/_snapshot_c.py), so that the TypeError is the very one the
 * pure class raises (and a call with valid keyword arguments works). Cold path. */
static PyObject *
call_with_signature(PyObject *self, const char *name, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject **stack = PyMem_Malloc((size_t)(1 + nargs + nkw) * sizeof(PyObject *));
    if (stack == NULL) {
        return PyErr_NoMemory();
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) {
        stack[1 + i] = args[i];
    }
    PyObject *attr = PyUnicode_FromFormat("_signature_%s", name);
    PyObject *result = NULL;
    if (attr != NULL) {
        result = PyObject_VectorcallMethod(attr, stack, (size_t)(1 + nargs), kwnames);
        Py_DECREF(attr);
    }
    PyMem_Free(stack);
    return result;
}

/* -- SnapshotMapBase --------------------------------------------------------------------------- */

static PyObject *
map_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    ftmap_state *state = ftmap_state_of_type(type);
    if (state == NULL) {
        return NULL;
    }
    SnapshotMapObject *self = (SnapshotMapObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    ftmap_ref_init(&self->current, NULL);
    ftmap_ref_init(&self->history, NULL);
    self->state = state;
    return (PyObject *)self;
}

static int
map_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    ftmap_ref_visit(&MAP(op)->current);
    ftmap_ref_visit(&MAP(op)->history);
    return 0;
}

static int
map_clear(PyObject *op)
{
    ftmap_ref_clear(&MAP(op)->current);
    ftmap_ref_clear(&MAP(op)->history);
    return 0;
}

static void
map_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)map_clear(op);
    type->tp_free(op);
    Py_DECREF(type);
}

/* m.get(key, default=None): dict.get's arguments and errors (the pure map's get IS the current
 * snapshot's dict.get). */
static PyObject *
map_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) {
        PyErr_SetString(PyExc_TypeError, "Snapshot.get() takes no keyword arguments");
        return NULL;
    }
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "get expected at %s %d argument%s, got %zd",
                     nargs < 1 ? "least" : "most", nargs < 1 ? 1 : 2, nargs < 1 ? "" : "s", nargs);
        return NULL;
    }
    PyObject *snap = map_load(MAP(op));
    if (snap == NULL) {
        return NULL;
    }
    PyObject *value = snap_get(snap, args[0], nargs == 2 ? args[1] : Py_None);
    Py_DECREF(snap); /* after the lookup: may free a replaced snapshot (its values' __del__) */
    return value;
}

static PyObject *
map_subscript(PyObject *op, PyObject *key)
{
    PyObject *snap = map_load(MAP(op));
    if (snap == NULL) {
        return NULL;
    }
    PyObject *value = snap_subscript(snap, key);
    Py_DECREF(snap);
    return value;
}

static int
map_contains(PyObject *op, PyObject *key)
{
    PyObject *snap = map_load(MAP(op));
    if (snap == NULL) {
        return -1;
    }
    int found = PyDict_Contains(snap, key);
    Py_DECREF(snap);
    return found;
}

static Py_ssize_t
map_length(PyObject *op)
{
    PyObject *snap = map_load(MAP(op));
    if (snap == NULL) {
        return -1;
    }
    Py_ssize_t n = PyObject_Size(snap);
    Py_DECREF(snap);
    return n;
}

static PyObject *
map_iter(PyObject *op)
{
    PyObject *snap = map_load(MAP(op));
    if (snap == NULL) {
        return NULL;
    }
    PyObject *it = PyObject_GetIter(snap); /* the iterator holds the snapshot: never raises */
    Py_DECREF(snap);
    return it;
}

static PyObject *
map_snapshot(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        return call_with_signature(op, "snapshot", args, nargs, kwnames);
    }
    return map_load(MAP(op));
}

/* The version is the snapshot's own read-only attribute: one load gives both. */
static PyObject *
map_get_version(PyObject *op, void *closure)
{
    (void)closure;
    PyObject *snap = map_load(MAP(op));
    if (snap == NULL) {
        return NULL;
    }
    PyObject *version = PyObject_GetAttr(snap, MAP(op)->state->snapshot_str_version);
    Py_DECREF(snap);
    return version;
}

/* The errors of the pure class's read-only property. */
static int
map_set_version(PyObject *op, PyObject *value, void *closure)
{
    (void)closure;
    PyObject *name = PyType_GetName(Py_TYPE(op));
    if (name != NULL) {
        PyErr_Format(PyExc_AttributeError, "property 'version' of %R object has no %s", name,
                     value == NULL ? "deleter" : "setter");
        Py_DECREF(name);
    }
    return -1;
}

static PyObject *
map_get_history(PyObject *op, void *closure)
{
    (void)closure;
    PyObject *history = ftmap_ref_load(&MAP(op)->history);
    if (history == NULL) {
        return not_initialised(op);
    }
    return history;
}

/* _publish(new, history, tail, node): make `new` the current snapshot.
 *
 * Called only by SnapshotMap.__init__ (before the map is shared) and SnapshotMap._write, under
 * the writer lock, with: new, a Snapshot whose version is set; history, the new history tuple,
 * ending with new; tail, the last node of the delivery chain; node, the _Pending for this
 * version, or None when nobody is subscribed (tail is then ignored).
 *
 * In this order: history, current, then node linked after tail and made the map's _tail (so a
 * deliverer never sees a pending version before it is published). Every step is a store that
 * runs no user code: the two exchanges, and two stores into __slots__ members of ftmap's own
 * classes. The references released at the end (the old history and snapshot, the old tail and
 * its None) are all still held by the caller's locals, so no __del__ runs here. One C call: an
 * asynchronous exception lands before it or after it, never inside. */
static PyObject *
map_publish(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    SnapshotMapObject *self = MAP(op);
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "_publish expected 4 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *new = args[0], *history = args[1], *tail = args[2], *node = args[3];
    if (!PyDict_Check(new) || !PyTuple_Check(history) || PyTuple_GET_SIZE(history) == 0 ||
        PyTuple_GET_ITEM(history, PyTuple_GET_SIZE(history) - 1) != new) {
        PyErr_SetString(PyExc_TypeError,
                        "_publish(new, history, tail, node): new must be a snapshot and the "
                        "last item of the history tuple");
        return NULL;
    }
    PyObject *old_history = ftmap_ref_exchange(&self->history, Py_NewRef(history));
    PyObject *old_current = ftmap_ref_exchange(&self->current, Py_NewRef(new));
    int linked = 0;
    if (node != Py_None) {
        linked = PyObject_SetAttr(tail, self->state->snapshot_str_next, node);
        if (linked == 0) {
            linked = PyObject_SetAttr(op, self->state->snapshot_str__tail, node);
        }
    }
    Py_XDECREF(old_history);
    Py_XDECREF(old_current);
    if (linked < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

#ifdef FTMAP_TEST_HOOKS
/* TEST ONLY: the deliberately naive load-then-incref of the current snapshot, a use after free
 * under concurrent publishing; tests/stress/test_snapshot_uaf.py proves its harness catches it. */
static PyObject *
map_naive_snapshot(PyObject *op, PyObject *unused)
{
    (void)unused;
    PyObject *snap = (PyObject *)ftmap_atomic_load_ptr_acquire(&MAP(op)->current._obj);
    if (snap == NULL) {
        Py_RETURN_NONE;
    }
    Py_INCREF(snap);
    return snap;
}

/* TEST ONLY: _check_loads(n, expected_type, naive) -> how many of n loads (safe, or naive) gave
 * an object of another type: the use-after-free stress test's tight loop. */
static PyObject *
map_check_loads(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyLong_Check(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_check_loads(n, expected_type, naive)");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[0]);
    int naive = PyObject_IsTrue(args[2]);
    if ((n == -1 && PyErr_Occurred()) || naive < 0) {
        return NULL;
    }
    Py_ssize_t wrong = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *snap = naive ? map_naive_snapshot(op, NULL) : ftmap_ref_load(&MAP(op)->current);
        if (snap == NULL) {
            return NULL;
        }
        wrong += !Py_IS_TYPE(snap, (PyTypeObject *)args[1]);
        Py_DECREF(snap);
    }
    return PyLong_FromSsize_t(wrong);
}
#endif

PyDoc_STRVAR(map_get_doc, "get($self, key, default=None, /)\n--\n\n"
                          "Return the value for key if key is in the dictionary, else default.");
PyDoc_STRVAR(map_snapshot_doc, "snapshot($self, /)\n--\n\n"
                               "The current content, read-only forever, with its ``version``.");

static PyMethodDef map_methods[] = {
    {"get", _PyCFunction_CAST(map_get), METH_FASTCALL | METH_KEYWORDS, map_get_doc},
    {"snapshot", _PyCFunction_CAST(map_snapshot), METH_FASTCALL | METH_KEYWORDS, map_snapshot_doc},
    {"_publish", _PyCFunction_CAST(map_publish), METH_FASTCALL,
     "_publish(new, history, tail, node): SnapshotMap._write's publish (writer lock held)."},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, "See PEP 585."},
#ifdef FTMAP_TEST_HOOKS
    {"_naive_snapshot", map_naive_snapshot, METH_NOARGS, "TEST ONLY: load then incref (unsafe)."},
    {"_check_loads", _PyCFunction_CAST(map_check_loads), METH_FASTCALL,
     "TEST ONLY: _check_loads(n, expected_type, naive) -> loads of another type."},
#endif
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef map_getset[] = {
    {"version", map_get_version, map_set_version,
     "The current version: 1 for the initial content, one more for every publish.", NULL},
    {"_history", map_get_history, NULL, "The snapshots kept for rollback, oldest first.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot map_slots[] = {
    {Py_tp_new, map_new},
    {Py_tp_dealloc, map_dealloc},
    {Py_tp_traverse, map_traverse},
    {Py_tp_clear, map_clear},
    {Py_tp_iter, map_iter},
    {Py_tp_methods, map_methods},
    {Py_tp_getset, map_getset},
    {Py_mp_subscript, map_subscript},
    {Py_mp_length, map_length},
    {Py_sq_contains, map_contains},
    {Py_tp_doc, "SnapshotMap's read paths in C: the base of ftmap._snapshot_c.SnapshotMap."},
    {0, NULL},
};

static PyType_Spec map_spec = {
    .name = "ftmap._core.SnapshotMapBase",
    .basicsize = sizeof(SnapshotMapObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_MAPPING,
    .slots = map_slots,
};

/* -- SnapshotReaderBase ------------------------------------------------------------------------ */

static inline int
reader_is_owner(SnapshotReaderObject *self)
{
#if FTMAP_FREE_THREADED
    return self->owner == _Py_ThreadId();
#else
    (void)self; /* the GIL serialises the reader's users; `busy` covers re-entrance */
    return 1;
#endif
}

/* The snapshot one read uses. On the owner's cached path it is BORROWED from the cache, which
 * `busy` protects until reader_release; on the shared path (another thread, or a nested read)
 * it is a strong reference. */
typedef struct {
    PyObject *snap;
    int cached;
} reader_view;

static inline int
reader_acquire(SnapshotReaderObject *self, reader_view *view)
{
    SnapshotMapObject *map = MAP(self->map);
    if (reader_is_owner(self) && !self->busy) {
        self->busy = 1; /* before load_cached: the __del__ it may run nests on the shared path */
        view->cached = 1;
        view->snap = ftmap_ref_load_cached(&map->current, &self->cache);
    }
    else {
        view->cached = 0;
        view->snap = ftmap_ref_load(&map->current);
    }
    if (view->snap == NULL) {
        if (view->cached) {
            self->busy = 0;
        }
        not_initialised(self->map);
        return -1;
    }
    return 0;
}

static inline void
reader_release(SnapshotReaderObject *self, reader_view *view)
{
    if (view->cached) {
        self->busy = 0;
    }
    else {
        Py_DECREF(view->snap);
    }
}

static PyObject *
reader_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"owner", NULL};
    PyObject *owner;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:SnapshotReader", kwlist, &owner)) {
        return NULL;
    }
    ftmap_state *state = ftmap_state_of_type(type);
    if (state == NULL) {
        return NULL;
    }
    if (!PyObject_TypeCheck(owner, (PyTypeObject *)state->SnapshotMapType)) {
        PyObject *name = PyType_GetName(Py_TYPE(owner));
        if (name != NULL) {
            PyErr_Format(PyExc_TypeError, "SnapshotReader needs a SnapshotMap, not %R", name);
            Py_DECREF(name);
        }
        return NULL;
    }
    /* The first copy, loaded by the creating thread (its owner): the first read is a hit. */
    PyObject *first = map_load(MAP(owner));
    if (first == NULL) {
        return NULL;
    }
    SnapshotReaderObject *self = (SnapshotReaderObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(first);
        return NULL;
    }
    self->map = Py_NewRef(owner);
    self->cache = first;
    self->busy = 0;
#if FTMAP_FREE_THREADED
    self->owner = _Py_ThreadId();
#endif
    self->state = state;
    return (PyObject *)self;
}

static int
reader_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(READER(op)->map);
    Py_VISIT(READER(op)->cache);
    return 0;
}

static int
reader_clear(PyObject *op)
{
    Py_CLEAR(READER(op)->cache);
    Py_CLEAR(READER(op)->map);
    return 0;
}

static void
reader_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)reader_clear(op);
    type->tp_free(op);
    Py_DECREF(type);
}

/* Every operation below checks `map` first: NULL only after tp_clear, when the reader is
 * garbage in a reference cycle (a finalizer of that cycle may still call it). */
#define READER_CHECK(self, fail)                                                                   \
    if ((self)->map == NULL) {                                                                     \
        PyErr_SetString(PyExc_RuntimeError, "this SnapshotReader was cleared");                    \
        return fail;                                                                               \
    }

static PyObject *
reader_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    SnapshotReaderObject *self = READER(op);
    if (nargs < 1 || nargs > 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        return call_with_signature(op, "get", args, nargs, kwnames);
    }
    READER_CHECK(self, NULL)
    reader_view view;
    if (reader_acquire(self, &view) < 0) {
        return NULL;
    }
    PyObject *value = snap_get(view.snap, args[0], nargs == 2 ? args[1] : Py_None);
    reader_release(self, &view);
    return value;
}

static PyObject *
reader_subscript(PyObject *op, PyObject *key)
{
    SnapshotReaderObject *self = READER(op);
    READER_CHECK(self, NULL)
    reader_view view;
    if (reader_acquire(self, &view) < 0) {
        return NULL;
    }
    PyObject *value = snap_subscript(view.snap, key);
    reader_release(self, &view);
    return value;
}

static int
reader_contains(PyObject *op, PyObject *key)
{
    SnapshotReaderObject *self = READER(op);
    READER_CHECK(self, -1)
    reader_view view;
    if (reader_acquire(self, &view) < 0) {
        return -1;
    }
    int found = PyDict_Contains(view.snap, key);
    reader_release(self, &view);
    return found;
}

/* A new reference to the current snapshot, through the cache on the owner's path. */
static PyObject *
reader_current(SnapshotReaderObject *self)
{
    READER_CHECK(self, NULL)
    reader_view view;
    if (reader_acquire(self, &view) < 0) {
        return NULL;
    }
    PyObject *snap = Py_NewRef(view.snap);
    reader_release(self, &view);
    return snap;
}

static PyObject *
reader_snapshot(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        return call_with_signature(op, "snapshot", args, nargs, kwnames);
    }
    return reader_current(READER(op));
}

static Py_ssize_t
reader_length(PyObject *op)
{
    PyObject *snap = reader_current(READER(op));
    if (snap == NULL) {
        return -1;
    }
    Py_ssize_t n = PyObject_Size(snap);
    Py_DECREF(snap);
    return n;
}

static PyObject *
reader_iter(PyObject *op)
{
    PyObject *snap = reader_current(READER(op));
    if (snap == NULL) {
        return NULL;
    }
    PyObject *it = PyObject_GetIter(snap);
    Py_DECREF(snap);
    return it;
}

static PyObject *
reader_get_map(PyObject *op, void *closure)
{
    (void)closure;
    SnapshotReaderObject *self = READER(op);
    READER_CHECK(self, NULL)
    return Py_NewRef(self->map);
}

PyDoc_STRVAR(reader_get_doc, "get($self, key, default=None)\n--\n\n"
                             "The value for key in the current snapshot, else default.");
PyDoc_STRVAR(reader_snapshot_doc, "snapshot($self, /)\n--\n\n"
                                  "The map's current snapshot (as SnapshotMap.snapshot).");

static PyMethodDef reader_methods[] = {
    {"get", _PyCFunction_CAST(reader_get), METH_FASTCALL | METH_KEYWORDS, reader_get_doc},
    {"snapshot", _PyCFunction_CAST(reader_snapshot), METH_FASTCALL | METH_KEYWORDS,
     reader_snapshot_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef reader_getset[] = {
    {"_map", reader_get_map, NULL, "The map this reader reads.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot reader_slots[] = {
    {Py_tp_new, reader_new},
    {Py_tp_dealloc, reader_dealloc},
    {Py_tp_traverse, reader_traverse},
    {Py_tp_clear, reader_clear},
    {Py_tp_iter, reader_iter},
    {Py_tp_methods, reader_methods},
    {Py_tp_getset, reader_getset},
    {Py_mp_subscript, reader_subscript},
    {Py_mp_length, reader_length},
    {Py_sq_contains, reader_contains},
    {Py_tp_doc, "SnapshotReader's reads in C: the base of ftmap._snapshot_c.SnapshotReader."},
    {0, NULL},
};

static PyType_Spec reader_spec = {
    .name = "ftmap._core.SnapshotReaderBase",
    .basicsize = sizeof(SnapshotReaderObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_MAPPING,
    .slots = reader_slots,
};

/* -- SnapshotMapHandleBase ---------------------------------------------------------------------
 *
 * The per-thread handle (issue 12): the reader's reads with a cache that any ONE thread at a time
 * may use (no owner thread: a handle used by several threads stays correct, and each thread that
 * finds the cache taken reads through the map's path), plus `map` and `version`. Writes are the
 * Python subclass's (ftmap._snapshot_c.SnapshotMapHandle): they call the map's own methods.
 *
 * What the handle caches, and why it is safe:
 * - `cache` holds a STRONG reference to a snapshot that was the map's current one when loaded.
 *   Only the thread that holds `busy` reads or writes `cache` (tp_traverse/tp_clear/tp_dealloc
 *   read it only when no thread can be using the handle: world stopped, or unreachable).
 * - `busy` is taken by a compare-and-swap 0 -> 1 (sequentially consistent: it orders after the
 *   previous holder's release) and given back by a release store of 0 after the operation's last
 *   use of the borrowed pointer. So at most one thread at a time holds `busy`, and it sees every
 *   store to `cache` made by earlier holders.
 * - While a thread holds `busy`, the snapshot in `cache` cannot be released by anyone (only the
 *   holder replaces `cache`), so the BORROWED pointer an operation gets from
 *   ftmap_ref_load_cached stays valid until the operation gives `busy` back. A nested call on
 *   the same thread (a key's __eq__, or a __del__ run when the old cached snapshot is released)
 *   finds `busy` taken and takes the shared path: it never replaces the cache under the outer
 *   operation.
 * - Linearizability: every cached read compares `cache` with the map's current snapshot
 *   (ftmap_ref_load_cached: one acquire load of map->current); equal means the cached snapshot
 *   IS the current one at that load, the read's linearization point. Writes store the new
 *   snapshot with ftmap_ref_exchange before they return, so the handle's next read (of any
 *   thread) sees it: read-your-writes.
 * - A hit touches no reference count but the returned value's: the snapshot, the map and the
 *   handle are only loaded, never increfed.
 */

typedef struct {
    PyObject_HEAD
    PyObject *map;      /* fixed at construction: a strong reference to a SnapshotMapObject.
                         *   NULL only after tp_clear (garbage in a cycle). */
    PyObject *cache;    /* guarded by `busy`: read and written only by the thread holding it (no
                         *   atomics needed); a strong reference to the snapshot of map->current
                         *   last used through the cache (NULL: none yet). */
    Py_ssize_t busy;    /* 0: free; 1: a thread is using `cache`. Taken with a CAS 0 -> 1, given
                         *   back with a release store of 0; never held across a return to Python. */
    ftmap_state *state; /* fixed at construction */
} SnapshotHandleObject;

#define HANDLE(op) ((SnapshotHandleObject *)(op))

static inline int
handle_acquire(SnapshotHandleObject *self, reader_view *view)
{
    SnapshotMapObject *map = MAP(self->map);
    Py_ssize_t free_ = 0;
    if (ftmap_atomic_cas_ssize(&self->busy, &free_, 1)) {
        view->cached = 1;
        view->snap = ftmap_ref_load_cached(&map->current, &self->cache);
    }
    else {
        view->cached = 0;
        view->snap = ftmap_ref_load(&map->current);
    }
    if (view->snap == NULL) {
        if (view->cached) {
            ftmap_atomic_store_ssize_release(&self->busy, 0);
        }
        not_initialised(self->map);
        return -1;
    }
    return 0;
}

static inline void
handle_release(SnapshotHandleObject *self, reader_view *view)
{
    if (view->cached) {
        ftmap_atomic_store_ssize_release(&self->busy, 0);
    }
    else {
        Py_DECREF(view->snap);
    }
}

static PyObject *
handle_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"owner", NULL};
    PyObject *owner;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:SnapshotMapHandle", kwlist, &owner)) {
        return NULL;
    }
    ftmap_state *state = ftmap_state_of_type(type);
    if (state == NULL) {
        return NULL;
    }
    if (!PyObject_TypeCheck(owner, (PyTypeObject *)state->SnapshotMapType)) {
        PyObject *name = PyType_GetName(Py_TYPE(owner));
        if (name != NULL) {
            PyErr_Format(PyExc_TypeError, "SnapshotMapHandle needs a SnapshotMap, not %R", name);
            Py_DECREF(name);
        }
        return NULL;
    }
    /* The first snapshot, loaded by the creating thread: its first read is a hit. */
    PyObject *first = map_load(MAP(owner));
    if (first == NULL) {
        return NULL;
    }
    SnapshotHandleObject *self = (SnapshotHandleObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(first);
        return NULL;
    }
    self->map = Py_NewRef(owner);
    self->cache = first;
    self->busy = 0;
    self->state = state;
    return (PyObject *)self;
}

static int
handle_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(HANDLE(op)->map);
    Py_VISIT(HANDLE(op)->cache);
    return 0;
}

static int
handle_clear(PyObject *op)
{
    Py_CLEAR(HANDLE(op)->cache);
    Py_CLEAR(HANDLE(op)->map);
    return 0;
}

static void
handle_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)handle_clear(op);
    type->tp_free(op);
    Py_DECREF(type);
}

#define HANDLE_CHECK(self, fail)                                                                   \
    if ((self)->map == NULL) {                                                                     \
        PyErr_SetString(PyExc_RuntimeError, "this SnapshotMapHandle was cleared");                 \
        return fail;                                                                               \
    }

static PyObject *
handle_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    SnapshotHandleObject *self = HANDLE(op);
    if (nargs < 1 || nargs > 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        return call_with_signature(op, "get", args, nargs, kwnames);
    }
    HANDLE_CHECK(self, NULL)
    reader_view view;
    if (handle_acquire(self, &view) < 0) {
        return NULL;
    }
    PyObject *value = snap_get(view.snap, args[0], nargs == 2 ? args[1] : Py_None);
    handle_release(self, &view);
    return value;
}

static PyObject *
handle_subscript(PyObject *op, PyObject *key)
{
    SnapshotHandleObject *self = HANDLE(op);
    HANDLE_CHECK(self, NULL)
    reader_view view;
    if (handle_acquire(self, &view) < 0) {
        return NULL;
    }
    PyObject *value = snap_subscript(view.snap, key);
    handle_release(self, &view);
    return value;
}

static int
handle_contains(PyObject *op, PyObject *key)
{
    SnapshotHandleObject *self = HANDLE(op);
    HANDLE_CHECK(self, -1)
    reader_view view;
    if (handle_acquire(self, &view) < 0) {
        return -1;
    }
    int found = PyDict_Contains(view.snap, key);
    handle_release(self, &view);
    return found;
}

/* A new reference to the current snapshot, through the cache when it is free. */
static PyObject *
handle_current(SnapshotHandleObject *self)
{
    HANDLE_CHECK(self, NULL)
    reader_view view;
    if (handle_acquire(self, &view) < 0) {
        return NULL;
    }
    PyObject *snap = Py_NewRef(view.snap);
    handle_release(self, &view);
    return snap;
}

static PyObject *
handle_snapshot(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        return call_with_signature(op, "snapshot", args, nargs, kwnames);
    }
    return handle_current(HANDLE(op));
}

static Py_ssize_t
handle_length(PyObject *op)
{
    PyObject *snap = handle_current(HANDLE(op));
    if (snap == NULL) {
        return -1;
    }
    Py_ssize_t n = PyObject_Size(snap);
    Py_DECREF(snap);
    return n;
}

static PyObject *
handle_iter(PyObject *op)
{
    PyObject *snap = handle_current(HANDLE(op));
    if (snap == NULL) {
        return NULL;
    }
    PyObject *it = PyObject_GetIter(snap);
    Py_DECREF(snap);
    return it;
}

static PyObject *
handle_get_version(PyObject *op, void *closure)
{
    (void)closure;
    SnapshotHandleObject *self = HANDLE(op);
    HANDLE_CHECK(self, NULL)
    reader_view view;
    if (handle_acquire(self, &view) < 0) {
        return NULL;
    }
    PyObject *version = PyObject_GetAttr(view.snap, self->state->snapshot_str_version);
    handle_release(self, &view);
    return version;
}

static PyObject *
handle_get_map(PyObject *op, void *closure)
{
    (void)closure;
    SnapshotHandleObject *self = HANDLE(op);
    HANDLE_CHECK(self, NULL)
    return Py_NewRef(self->map);
}

PyDoc_STRVAR(handle_get_doc, "get($self, key, default=None)\n--\n\n"
                             "The value for key in the current snapshot, else default.");
PyDoc_STRVAR(handle_snapshot_doc, "snapshot($self, /)\n--\n\n"
                                  "The map's current snapshot (as SnapshotMap.snapshot).");

static PyMethodDef handle_methods[] = {
    {"get", _PyCFunction_CAST(handle_get), METH_FASTCALL | METH_KEYWORDS, handle_get_doc},
    {"snapshot", _PyCFunction_CAST(handle_snapshot), METH_FASTCALL | METH_KEYWORDS,
     handle_snapshot_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef handle_getset[] = {
    {"map", handle_get_map, NULL, "The map this handle reads and writes.", NULL},
    {"version", handle_get_version, map_set_version, "The current version (as SnapshotMap.version).",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot handle_slots[] = {
    {Py_tp_new, handle_new},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_iter, handle_iter},
    {Py_tp_methods, handle_methods},
    {Py_tp_getset, handle_getset},
    {Py_mp_subscript, handle_subscript},
    {Py_mp_length, handle_length},
    {Py_sq_contains, handle_contains},
    {Py_tp_doc, "SnapshotMapHandle's reads in C: the base of ftmap._snapshot_c.SnapshotMapHandle."},
    {0, NULL},
};

static PyType_Spec handle_spec = {
    .name = "ftmap._core.SnapshotMapHandleBase",
    .basicsize = sizeof(SnapshotHandleObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_MAPPING,
    .slots = handle_slots,
};

int
ftmap_snapshotmap_exec(PyObject *module, ftmap_state *st)
{
    st->snapshot_str_version = PyUnicode_InternFromString("version");
    st->snapshot_str_next = PyUnicode_InternFromString("next");
    st->snapshot_str__tail = PyUnicode_InternFromString("_tail");
    if (st->snapshot_str_version == NULL || st->snapshot_str_next == NULL ||
        st->snapshot_str__tail == NULL) {
        return -1;
    }
    st->SnapshotMapType = PyType_FromModuleAndSpec(module, &map_spec, NULL);
    if (st->SnapshotMapType == NULL ||
        PyModule_AddObjectRef(module, "SnapshotMapBase", st->SnapshotMapType) < 0) {
        return -1;
    }
    st->SnapshotReaderType = PyType_FromModuleAndSpec(module, &reader_spec, NULL);
    if (st->SnapshotReaderType == NULL ||
        PyModule_AddObjectRef(module, "SnapshotReaderBase", st->SnapshotReaderType) < 0) {
        return -1;
    }
    st->SnapshotMapHandleBaseType = PyType_FromModuleAndSpec(module, &handle_spec, NULL);
    if (st->SnapshotMapHandleBaseType == NULL ||
        PyModule_AddObjectRef(module, "SnapshotMapHandleBase", st->SnapshotMapHandleBaseType) < 0) {
        return -1;
    }
    return 0;
}
