/* unsafemap.c: UnsafeMapBase and UnsafeMapIterator, the C half of UnsafeMap.
 *
 * The reference is the pure-Python map, src/ftmap/_unsafe.py (read its module docstring first):
 * this file implements the same checks, with the same results, exceptions and reports. The
 * public class is ftmap._unsafe_c.UnsafeMap, a thin Python subclass of UnsafeMapBase that keeps
 * the cold methods (pop, setdefault, update, repr, ==, copy, pickling, the views) and builds the
 * race reports; the hot paths are here: m[k], get, in, len, m[k] = v, del m[k], pop,
 * setdefault and every iteration step.
 *
 * Go's runtime keeps a "being written" flag in the map header (hashWriting), set for the span of
 * every write and checked when a read, an iteration step or another write starts. Here:
 *
 *   writer   the ident of the thread inside a write (0: none). A write takes it with one atomic
 *            compare-and-swap 0 -> me, so of two overlapping writes the later one always fails
 *            and reports the earlier one; a failed CAS that finds this thread's own ident is a
 *            nested write of this thread (from a key's __hash__/__eq__ or a value's __del__),
 *            which proceeds without the claim, as in the pure map. Only the claimant releases it.
 *   writes   how many writes have finished. A read (and an iteration step) notes it on entry and
 *            compares it on exit, so it also catches a write that began and ended inside it.
 *   last     the ident of the thread of the latest finished write: the "other thread" of a
 *            report when the counter moved.
 *
 * Asynchronous exceptions and the claim. C code is never interrupted: an asynchronous exception
 * (KeyboardInterrupt, PyThreadState_SetAsyncExc) can only come out of Python code that the C
 * code calls. While the claim is held, that is the dict operation itself (a key's __hash__ or
 * __eq__, a replaced value's __del__) or the callable that _write runs (dict.pop, dict.update
 * ...). Each of them returns an error to us like any other exception, and the claim is released
 * on every path, before returning: no exception can leak it. Between taking the claim and the
 * call, and between the call and the release, no Python code runs.
 *
 * Locks: none. The dict is a plain dict; on the free-threaded build every PyDict_* operation
 * locks it internally (a critical section), which is what keeps a misused UnsafeMap memory-safe:
 * UnsafeMap detects misuse, it never prevents it. No PyMutex is ever held, so user code may run
 * anywhere.
 *
 * Memory safety: the only object fields are `data` (the dict, created in tp_new and never
 * replaced: __init__ clears and refills it) and, in the iterator, the map, the dict iterator and
 * the operation name, and in the per-thread handle (UnsafeMapHandleBase, issue 12) the map, all
 * fixed at construction. There is no reference that a writer replaces,
 * so nothing here needs ftmap_ref.
 *
 * Memory order: writer and writes are read and written with atomics only. The claimant stores
 * last (relaxed), then increments writes (seq_cst), then releases writer (release); a reader
 * loads writes (acquire) before its dict operation and writer, then writes (acquire) after it.
 * A write whose span overlaps the read is therefore seen either as a claim still held or as a
 * counter that moved (a release that the reader's exit load observes carries the increment that
 * precedes it). As in Go, and as in the pure map, detection is best effort in the sense that only
 * real overlaps are reported; it never reports what did not happen.
 */
#include "ftmap_core.h"
#include "pythread.h"

/* Not among ftmap_core.h's names; the claimant's plain-order store of last. */
#define unsafe_store_uintptr_relaxed(p, v) _Py_atomic_store_uintptr_relaxed((p), (v))

typedef struct {
    PyObject_HEAD
    PyObject *data;      /* the dict: fixed at construction (tp_new), never replaced. Its
                          * contents are changed by any thread through PyDict_* (locked internally
                          * on the free-threaded build) */
    uintptr_t writer;    /* ident of the thread inside a write, 0 if none. Taken by a writer with
                          * ftmap_atomic_cas_uintptr(0 -> me); released (stored 0, release) only by
                          * the thread that took it; read by anyone with
                          * ftmap_atomic_load_uintptr_acquire */
    uint64_t writes;     /* finished writes: incremented by the claimant with ftmap_atomic_add_u64
                          * before it releases writer; read by anyone with
                          * ftmap_atomic_load_u64_acquire */
    uintptr_t last;      /* ident of the thread of the latest finished write (initially the
                          * creator's): stored by the claimant (relaxed, as it holds the claim)
                          * before writes moves; read by the report path (relaxed; a report only
                          * names it) and by _state */
    ftmap_state *state;  /* fixed at construction */
} UnsafeMapObject;

typedef struct {
    PyObject_HEAD
    UnsafeMapObject *map; /* fixed at construction: the map iterated */
    PyObject *it;         /* fixed at construction: the dict's own iterator (keys, values or items,
                           * forward or reversed); stepped by any thread (dict iterators lock the
                           * dict on the free-threaded build) */
    iternextfunc next;    /* fixed at construction: Py_TYPE(it)->tp_iternext */
    PyObject *op;         /* fixed at construction: the operation a report names ("iterate keys") */
#ifdef FTMAP_TEST_HOOKS
    PyObject *inside_step; /* test hook (never in a user's build): a callable the next step runs
                            * between its start and the dict's step, then drops. Set through
                            * _test_inside_step by the test, on the stepping thread, before the
                            * step; only that thread reads or writes it (plain accesses) */
#endif
} UnsafeIterObject;

/* The kinds of _iter(kind, op), in the order of the pure map's iterator factories. */
enum {
    ITER_KEYS = 0,
    ITER_KEYS_REVERSED = 1,
    ITER_VALUES = 2,
    ITER_VALUES_REVERSED = 3,
    ITER_ITEMS = 4,
    ITER_ITEMS_REVERSED = 5,
};

static inline uintptr_t
current_ident(void)
{
    /* threading.get_ident() is this very function. */
    return (uintptr_t)PyThread_get_thread_ident();
}

/* -- the cold path: the report ----------------------------------------------------------------- */

/* Raise kind(op, ThreadInfo.of(me), ThreadInfo.of(other)[, key]) through the Python subclass's
 * _race method, which also appends the error to self.reports and to race_log. key NULL: the
 * operation has no key. Always returns -1 with an exception set. Runs Python code; no claim of
 * this thread is held here (a write that fails its claim never took it). */
static Py_NO_INLINE int
race(UnsafeMapObject *self, PyObject *kind, const char *op, PyObject *key, uintptr_t me,
     uintptr_t other)
{
    PyObject *name = PyUnicode_InternFromString("_race");
    PyObject *op_str = PyUnicode_FromString(op);
    PyObject *me_obj = PyLong_FromUnsignedLong((unsigned long)me);
    PyObject *other_obj = PyLong_FromUnsignedLong((unsigned long)other);
    if (name != NULL && op_str != NULL && me_obj != NULL && other_obj != NULL) {
        PyObject *args[] = {(PyObject *)self, kind, op_str, me_obj, other_obj, key};
        size_t nargs = key == NULL ? 5 : 6;
        PyObject *result =
            PyObject_VectorcallMethod(name, args, nargs, NULL);
        if (result != NULL) {
            Py_DECREF(result);
            PyErr_SetString(PyExc_SystemError, "UnsafeMap._race returned instead of raising");
        }
    }
    Py_XDECREF(name);
    Py_XDECREF(op_str);
    Py_XDECREF(me_obj);
    Py_XDECREF(other_obj);
    return -1;
}

/* The pure map's _check_read: raise kind if another thread's write overlapped this read. With
 * has_noted 0, only a write in progress by another thread counts (the entry check); with 1, also
 * a write that finished since `noted` was read, unless this thread made it. Returns 0 (no race)
 * or -1 (raised). */
static Py_NO_INLINE int
check_read(UnsafeMapObject *self, PyObject *kind, const char *op, PyObject *key, int has_noted,
           uint64_t noted)
{
    uintptr_t me = current_ident();
    uintptr_t other = ftmap_atomic_load_uintptr_acquire(&self->writer);
    if (other == 0 || other == me) {
        other = 0;
        if (has_noted && ftmap_atomic_load_u64_acquire(&self->writes) != noted) {
            uintptr_t last = ftmap_atomic_load_uintptr_relaxed(&self->last);
            if (last != me) {
                other = last;
            }
        }
    }
    if (other == 0) {
        return 0;
    }
    return race(self, kind, op, key, me, other);
}

/* A read's checks, inlined into every hot read. */
#define READ_ENTER(self, kind, op, key, noted, fail)                                               \
    uint64_t noted = ftmap_atomic_load_u64_acquire(&(self)->writes);                               \
    if (ftmap_atomic_load_uintptr_acquire(&(self)->writer) != 0 &&                                 \
        check_read((self), (kind), (op), (key), 0, 0) < 0) {                                       \
        fail;                                                                                      \
    }

#define READ_EXIT_RACED(self, noted)                                                               \
    (ftmap_atomic_load_uintptr_acquire(&(self)->writer) != 0 ||                                    \
     ftmap_atomic_load_u64_acquire(&(self)->writes) != (noted))

/* -- the write claim --------------------------------------------------------------------------- */

/* Take the claim: 1 taken (release it with claim_release), 0 not needed (this thread's own nested
 * write: proceed without it), -1 another thread holds it (reported: do not perform the write). */
static inline int
claim_take(UnsafeMapObject *self, uintptr_t me, const char *op, PyObject *key)
{
    uintptr_t owner = 0;
    if (ftmap_atomic_cas_uintptr(&self->writer, &owner, me)) {
        return 1;
    }
    if (owner == me) {
        return 0;
    }
    return race(self, self->state->ConcurrentWriteError, op, key, me, owner);
}

/* The claimant's release, on every path out of the write (also when it raised). The counter
 * moves before the claim goes, so an overlapping reader sees one or the other. */
static inline void
claim_release(UnsafeMapObject *self, uintptr_t me)
{
    unsafe_store_uintptr_relaxed(&self->last, me);
    (void)ftmap_atomic_add_u64(&self->writes, 1);
    ftmap_atomic_store_uintptr_release(&self->writer, 0);
}

/* -- the type: construction and GC ------------------------------------------------------------- */

static PyObject *
umap_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    /* The arguments are __init__'s (the Python subclass fills the dict). */
    (void)args;
    (void)kwargs;
    ftmap_state *st = ftmap_state_of_type(type);
    if (st == NULL) {
        return NULL;
    }
    PyObject *data = PyDict_New();
    if (data == NULL) {
        return NULL;
    }
    UnsafeMapObject *self = (UnsafeMapObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    self->data = data;
    self->state = st;
    self->writer = 0;
    self->writes = 0;
    self->last = current_ident();
    return (PyObject *)self;
}

static int
umap_traverse(PyObject *op, visitproc visit, void *arg)
{
    UnsafeMapObject *self = (UnsafeMapObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->data);
    return 0;
}

static int
umap_clear(PyObject *op)
{
    /* data stays: it is never replaced, and the other methods assume it is there. Clearing its
     * contents breaks any cycle through it. */
    UnsafeMapObject *self = (UnsafeMapObject *)op;
    if (self->data != NULL) {
        PyDict_Clear(self->data);
    }
    return 0;
}

static void
umap_dealloc(PyObject *op)
{
    UnsafeMapObject *self = (UnsafeMapObject *)op;
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    Py_CLEAR(self->data);
    type->tp_free(op);
    Py_DECREF(type);
}

/* -- hot reads ---------------------------------------------------------------------------------- */

static PyObject *
umap_subscript(PyObject *op, PyObject *key)
{
    UnsafeMapObject *self = (UnsafeMapObject *)op;
    PyObject *kind = self->state->ConcurrentReadWriteError;
    READ_ENTER(self, kind, "read", key, noted, return NULL)
    PyObject *value;
    int found = PyDict_GetItemRef(self->data, key, &value);
    if (found == 0) {
        /* dict's own KeyError: the key wrapped in a tuple, so that a tuple key stays one. */
        PyObject *wrapped = PyTuple_Pack(1, key);
        if (wrapped != NULL) {
            PyErr_SetObject(PyExc_KeyError, wrapped);
            Py_DECREF(wrapped);
        }
        return NULL;
    }
    if (found < 0) {
        return NULL;
    }
    if (READ_EXIT_RACED(self, noted) && check_read(self, kind, "read", key, 1, noted) < 0) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

static PyObject *
umap_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    UnsafeMapObject *self = (UnsafeMapObject *)op;
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "get expected %s, got %zd",
                     nargs < 1 ? "at least 1 argument" : "at most 2 arguments", nargs);
        return NULL;
    }
    PyObject *key = args[0];
    PyObject *kind = self->state->ConcurrentReadWriteError;
    READ_ENTER(self, kind, "read", key, noted, return NULL)
    PyObject *value;
    int found = PyDict_GetItemRef(self->data, key, &value);
    if (found < 0) {
        return NULL;
    }
    if (found == 0) {
        value = Py_NewRef(nargs == 2 ? args[1] : Py_None);
    }
    if (READ_EXIT_RACED(self, noted) && check_read(self, kind, "read", key, 1, noted) < 0) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

static int
umap_contains(PyObject *op, PyObject *key)
{
    UnsafeMapObject *self = (UnsafeMapObject *)op;
    PyObject *kind = self->state->ConcurrentReadWriteError;
    READ_ENTER(self, kind, "contains", key, noted, return -1)
    int found = PyDict_Contains(self->data, key);
    if (found < 0) {
        return -1;
    }
    if (READ_EXIT_RACED(self, noted) && check_read(self, kind, "contains", key, 1, noted) < 0) {
        return -1;
    }
    return found;
}

static Py_ssize_t
umap_length(PyObject *op)
{
    UnsafeMapObject *self = (UnsafeMapObject *)op;
    PyObject *kind = self->state->ConcurrentReadWriteError;
    READ_ENTER(self, kind, "len", NULL, noted, return -1)
    Py_ssize_t size = PyDict_Size(self->data);
    if (READ_EXIT_RACED(self, noted) && check_read(self, kind, "len", NULL, 1, noted) < 0) {
        return -1;
    }
    return size;
}

/* -- hot writes --------------------------------------------------------------------------------- */

static int
umap_ass_subscript(PyObject *op, PyObject *key, PyObject *value)
{
    UnsafeMapObject *self = (UnsafeMapObject *)op;
    uintptr_t me = current_ident();
    const char *name = value == NULL ? "delete" : "write";
    int claimed = claim_take(self, me, name, key);
    if (claimed < 0) {
        return -1;
    }
    /* May run the key's __hash__/__eq__ and the old value's __del__: an exception from them
     * (asynchronous ones included) is an ordinary error here, and the claim is released below on
     * every path. PyDict_DelItem raises dict's own KeyError for a missing key. */
    int rc = value == NULL ? PyDict_DelItem(self->data, key)
                           : PyDict_SetItem(self->data, key, value);
    if (claimed) {
        claim_release(self, me);
    }
    return rc;
}

/* pop(key[, default], /): dict.pop under the claim. */
static PyObject *
umap_pop(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    UnsafeMapObject *self = (UnsafeMapObject *)op;
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "pop expected %s, got %zd",
                     nargs < 1 ? "at least 1 argument" : "at most 2 arguments", nargs);
        return NULL;
    }
    PyObject *key = args[0];
    uintptr_t me = current_ident();
    int claimed = claim_take(self, me, "pop", key);
    if (claimed < 0) {
        return NULL;
    }
    /* May run the key's __hash__/__eq__: errors come back here; the claim goes on every path. */
    PyObject *value = NULL;
    int found = PyDict_Pop(self->data, key, &value);
    if (found == 0) {
        if (nargs == 2) {
            value = Py_NewRef(args[1]);
        }
        else {
            PyObject *wrapped = PyTuple_Pack(1, key); /* dict's own KeyError */
            if (wrapped != NULL) {
                PyErr_SetObject(PyExc_KeyError, wrapped);
                Py_DECREF(wrapped);
            }
        }
    }
    if (claimed) {
        claim_release(self, me);
    }
    return value;
}

/* setdefault(key, default=None, /): dict.setdefault under the claim. */
static PyObject *
umap_setdefault(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    UnsafeMapObject *self = (UnsafeMapObject *)op;
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "setdefault expected %s, got %zd",
                     nargs < 1 ? "at least 1 argument" : "at most 2 arguments", nargs);
        return NULL;
    }
    PyObject *key = args[0];
    uintptr_t me = current_ident();
    int claimed = claim_take(self, me, "setdefault", key);
    if (claimed < 0) {
        return NULL;
    }
    PyObject *value = NULL;
    (void)PyDict_SetDefaultRef(self->data, key, nargs == 2 ? args[1] : Py_None, &value);
    if (claimed) {
        claim_release(self, me);
    }
    return value;
}

/* -- _read and _write: the checks around a Python callable, for the cold methods ---------------- */

/* _read(op, fn, *args): fn(*args) as a read named op, checked on entry and on exit. */
static PyObject *
umap_read_call(PyObject *op_self, PyObject *const *args, Py_ssize_t nargs)
{
    UnsafeMapObject *self = (UnsafeMapObject *)op_self;
    if (nargs < 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "_read(op: str, fn, *args)");
        return NULL;
    }
    const char *op = PyUnicode_AsUTF8(args[0]);
    if (op == NULL) {
        return NULL;
    }
    PyObject *kind = self->state->ConcurrentReadWriteError;
    READ_ENTER(self, kind, op, NULL, noted, return NULL)
    PyObject *result = PyObject_Vectorcall(args[1], args + 2, (size_t)(nargs - 2), NULL);
    if (result == NULL) {
        return NULL;
    }
    if (READ_EXIT_RACED(self, noted) && check_read(self, kind, op, NULL, 1, noted) < 0) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

/* _write(op, fn, *args, key=<none>): fn(*args) as a write named op, under the claim. */
static PyObject *
umap_write_call(PyObject *op_self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    UnsafeMapObject *self = (UnsafeMapObject *)op_self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *key = NULL;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) {
        if (PyTuple_GET_SIZE(kwnames) != 1 ||
            PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "key") != 0) {
            PyErr_SetString(PyExc_TypeError, "_write() takes only the keyword argument key");
            return NULL;
        }
        key = args[nargs];
    }
    if (nargs < 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "_write(op: str, fn, *args, key=...)");
        return NULL;
    }
    const char *op = PyUnicode_AsUTF8(args[0]);
    if (op == NULL) {
        return NULL;
    }
    uintptr_t me = current_ident();
    int claimed = claim_take(self, me, op, key);
    if (claimed < 0) {
        return NULL;
    }
    /* Any Python code may run here (dict.update iterates the user's object): its exceptions,
     * asynchronous ones included, come back as NULL, and the claim is released below. */
    PyObject *result = PyObject_Vectorcall(args[1], args + 2, (size_t)(nargs - 2), NULL);
    if (claimed) {
        claim_release(self, me);
    }
    return result;
}

/* _reset(d): the contents become d's, for __init__ (the pure map's __init__ assigns a new dict;
 * here the dict object is never replaced, so that no reader can be left holding a freed one). */
static PyObject *
umap_reset(PyObject *op, PyObject *source)
{
    UnsafeMapObject *self = (UnsafeMapObject *)op;
    if (!PyDict_Check(source)) {
        PyErr_SetString(PyExc_TypeError, "_reset() needs a dict");
        return NULL;
    }
    PyDict_Clear(self->data);
    if (PyDict_Update(self->data, source) < 0) {
        return NULL;
    }
    unsafe_store_uintptr_relaxed(&self->last, current_ident());
    Py_RETURN_NONE;
}

static PyObject *
umap_get_data(PyObject *op, void *closure)
{
    (void)closure;
    return Py_NewRef(((UnsafeMapObject *)op)->data);
}

/* _state: the pure map's _state dict, rebuilt for the tests that inspect it: {1: ident of the
 * latest writer} plus {0: ident of the claimant} while a write holds the claim. */
static PyObject *
umap_get_state(PyObject *op, void *closure)
{
    (void)closure;
    UnsafeMapObject *self = (UnsafeMapObject *)op;
    uintptr_t writer = ftmap_atomic_load_uintptr_acquire(&self->writer);
    uintptr_t last = ftmap_atomic_load_uintptr_relaxed(&self->last);
    PyObject *state = PyDict_New();
    if (state == NULL) {
        return NULL;
    }
    PyObject *k1 = PyLong_FromLong(1);
    PyObject *v1 = PyLong_FromUnsignedLong((unsigned long)last);
    int rc = (k1 == NULL || v1 == NULL) ? -1 : PyDict_SetItem(state, k1, v1);
    Py_XDECREF(k1);
    Py_XDECREF(v1);
    if (rc == 0 && writer != 0) {
        PyObject *k0 = PyLong_FromLong(0);
        PyObject *v0 = PyLong_FromUnsignedLong((unsigned long)writer);
        rc = (k0 == NULL || v0 == NULL) ? -1 : PyDict_SetItem(state, k0, v0);
        Py_XDECREF(k0);
        Py_XDECREF(v0);
    }
    if (rc < 0) {
        Py_DECREF(state);
        return NULL;
    }
    return state;
}

/* -- iteration ---------------------------------------------------------------------------------- */

static PyObject *
make_dict_iterator(PyObject *data, int kind)
{
    if (kind == ITER_KEYS) {
        return PyObject_GetIter(data);
    }
    if (kind == ITER_KEYS_REVERSED) {
        return PyObject_CallMethod(data, "__reversed__", NULL);
    }
    PyObject *view = PyObject_CallMethod(
        data, (kind == ITER_VALUES || kind == ITER_VALUES_REVERSED) ? "values" : "items", NULL);
    if (view == NULL) {
        return NULL;
    }
    PyObject *it = (kind == ITER_VALUES || kind == ITER_ITEMS)
                       ? PyObject_GetIter(view)
                       : PyObject_CallMethod(view, "__reversed__", NULL);
    Py_DECREF(view);
    return it;
}

static PyObject *
iterator_create(UnsafeMapObject *self, int kind, PyObject *op)
{
    ftmap_state *st = self->state;
    PyObject *error_kind = st->ConcurrentIterationError;
    const char *op_text = PyUnicode_AsUTF8(op);
    if (op_text == NULL) {
        return NULL;
    }
    READ_ENTER(self, error_kind, op_text, NULL, noted, return NULL)
    PyObject *it = make_dict_iterator(self->data, kind);
    if (it == NULL) {
        return NULL;
    }
    if (READ_EXIT_RACED(self, noted) &&
        check_read(self, error_kind, op_text, NULL, 1, noted) < 0) {
        Py_DECREF(it);
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)st->UnsafeMapIteratorType;
    UnsafeIterObject *iter = PyObject_GC_New(UnsafeIterObject, type);
    if (iter == NULL) {
        Py_DECREF(it);
        return NULL;
    }
    iter->map = (UnsafeMapObject *)Py_NewRef(self);
    iter->it = it;
    iter->next = Py_TYPE(it)->tp_iternext;
    iter->op = Py_NewRef(op);
#ifdef FTMAP_TEST_HOOKS
    iter->inside_step = NULL;
#endif
    PyObject_GC_Track(iter);
    return (PyObject *)iter;
}

static PyObject *
umap_iter(PyObject *op)
{
    PyObject *name = PyUnicode_InternFromString("iterate");
    if (name == NULL) {
        return NULL;
    }
    PyObject *it = iterator_create((UnsafeMapObject *)op, ITER_KEYS, name);
    Py_DECREF(name);
    return it;
}

/* _iter(kind, op): an iterator of the given kind (0-5: keys, reversed keys, values, reversed
 * values, items, reversed items), whose reports name op. */
static PyObject *
umap_iter_method(PyObject *op_self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyLong_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_iter(kind: int, op: str)");
        return NULL;
    }
    long kind = PyLong_AsLong(args[0]);
    if (kind == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (kind < ITER_KEYS || kind > ITER_ITEMS_REVERSED) {
        PyErr_SetString(PyExc_ValueError, "_iter(): kind must be 0 to 5");
        return NULL;
    }
    return iterator_create((UnsafeMapObject *)op_self, (int)kind, args[1]);
}

/* One step: a read of its own (the pure _MapIterator.__next__). One check, on exit: a write in
 * progress when the step began is either still in progress (the claim) or finished during the
 * step (the counter moved). Writes between steps are not checked: a thread may have written
 * while this one waited for it (a lock, a queue), as Go allows. */
static PyObject *
uiter_next(PyObject *op)
{
    UnsafeIterObject *self = (UnsafeIterObject *)op;
    UnsafeMapObject *map = self->map;
    uint64_t noted = ftmap_atomic_load_u64_acquire(&map->writes);
#ifdef FTMAP_TEST_HOOKS
    if (self->inside_step != NULL) {
        /* Holds this step open (tests/unit/test_unsafe.py: a whole write by another thread
         * runs here), as the pure map's test holds it open with a profile hook. */
        PyObject *hook = self->inside_step;
        self->inside_step = NULL;
        PyObject *done = PyObject_CallNoArgs(hook);
        Py_DECREF(hook);
        if (done == NULL) {
            return NULL;
        }
        Py_DECREF(done);
    }
#endif
    PyObject *result = self->next(self->it);
    if (READ_EXIT_RACED(map, noted)) {
        /* Also when the dict raised (RuntimeError) or the iterator is exhausted: a write by
         * another thread that overlapped this step is the better report, and the dict's own
         * exception becomes its __context__, as in the pure map's finally. */
        PyObject *pending = PyErr_GetRaisedException();
        const char *op_text = PyUnicode_AsUTF8(self->op);
        if (op_text == NULL ||
            check_read(map, map->state->ConcurrentIterationError, op_text, NULL, 1, noted) < 0) {
            Py_XDECREF(result);
            if (pending != NULL) {
                PyObject *raised = PyErr_GetRaisedException();
                PyException_SetContext(raised, pending); /* steals pending */
                PyErr_SetRaisedException(raised);
            }
            return NULL;
        }
        PyErr_SetRaisedException(pending);
    }
    return result;
}

static int
uiter_traverse(PyObject *op, visitproc visit, void *arg)
{
    UnsafeIterObject *self = (UnsafeIterObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->map);
    Py_VISIT(self->it);
#ifdef FTMAP_TEST_HOOKS
    Py_VISIT(self->inside_step);
#endif
    return 0;
}

#ifdef FTMAP_TEST_HOOKS
static PyObject *
uiter_get_inside_step(PyObject *op, void *closure)
{
    (void)closure;
    PyObject *hook = ((UnsafeIterObject *)op)->inside_step;
    return Py_NewRef(hook == NULL ? Py_None : hook);
}

static int
uiter_set_inside_step(PyObject *op, PyObject *value, void *closure)
{
    (void)closure;
    UnsafeIterObject *self = (UnsafeIterObject *)op;
    PyObject *old = self->inside_step;
    self->inside_step = (value == NULL || value == Py_None) ? NULL : Py_NewRef(value);
    Py_XDECREF(old);
    return 0;
}

static PyGetSetDef uiter_getset[] = {
    {"_test_inside_step", uiter_get_inside_step, uiter_set_inside_step,
     "test hook: a callable the next step runs between its start and the dict's step", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
#endif

static void
uiter_dealloc(PyObject *op)
{
    UnsafeIterObject *self = (UnsafeIterObject *)op;
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    Py_CLEAR(self->map);
    Py_CLEAR(self->it);
    Py_CLEAR(self->op);
#ifdef FTMAP_TEST_HOOKS
    Py_CLEAR(self->inside_step);
#endif
    PyObject_GC_Del(op);
    Py_DECREF(type);
}

/* -- UnsafeMapHandleBase: the per-thread handle (issue 12) --------------------------------------
 *
 * m.handle() gives one to the calling thread (ftmap._unsafe_c.UnsafeMapHandle, a thin Python
 * subclass). Its hot paths are the map's own functions above, called with the handle's map: the
 * same claim, the same counter, the same checks, reports and messages; a handle is a faster path
 * to them, never a way around them. What makes it faster is the caller's side: the interpreter
 * loads the handle (an object the thread made and owns: its reference count is the thread's own)
 * instead of the shared map, whose reference count every thread would write. Inside, the map is
 * reached through the handle's strong reference without a new one, the dict through the map's
 * `data` (fixed at construction, never replaced: __init__ run again clears and refills it, and
 * tp_clear only empties it), and the checks read the map's atomics. Nothing here is replaced by
 * writers, so nothing needs ftmap_ref.h; and a handle has no mutable state of its own, so any
 * thread may use any handle (it is only fast in its own thread) without a protocol. */

typedef struct {
    PyObject_HEAD
    UnsafeMapObject *map; /* strong reference, set in tp_new, never changed or cleared until
                           * dealloc; read by any thread without atomics (immutable after
                           * construction). No tp_clear: a cycle through a handle passes through
                           * the map's dict, which the map's tp_clear empties */
} UnsafeHandleObject;

#define HANDLE_MAP(op) ((PyObject *)((UnsafeHandleObject *)(op))->map)

static PyObject *
uhandle_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    ftmap_state *st = ftmap_state_of_type(type);
    if (st == NULL) {
        return NULL;
    }
    PyObject *map = NULL;
    if ((kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) || PyTuple_GET_SIZE(args) != 1) {
        PyErr_SetString(PyExc_TypeError, "UnsafeMapHandle(map) takes exactly one argument, the map");
        return NULL;
    }
    map = PyTuple_GET_ITEM(args, 0);
    if (!PyObject_TypeCheck(map, (PyTypeObject *)st->UnsafeMapBaseType)) {
        PyErr_Format(PyExc_TypeError, "UnsafeMapHandle needs an UnsafeMap, not %.200s",
                     Py_TYPE(map)->tp_name);
        return NULL;
    }
    UnsafeHandleObject *self = (UnsafeHandleObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->map = (UnsafeMapObject *)Py_NewRef(map);
    return (PyObject *)self;
}

static int
uhandle_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((UnsafeHandleObject *)op)->map);
    return 0;
}

static void
uhandle_dealloc(PyObject *op)
{
    UnsafeHandleObject *self = (UnsafeHandleObject *)op;
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    Py_CLEAR(self->map);
    type->tp_free(op);
    Py_DECREF(type);
}

static PyObject *
uhandle_subscript(PyObject *op, PyObject *key)
{
    return umap_subscript(HANDLE_MAP(op), key);
}

static int
uhandle_ass_subscript(PyObject *op, PyObject *key, PyObject *value)
{
    return umap_ass_subscript(HANDLE_MAP(op), key, value);
}

static int
uhandle_contains(PyObject *op, PyObject *key)
{
    return umap_contains(HANDLE_MAP(op), key);
}

static Py_ssize_t
uhandle_length(PyObject *op)
{
    return umap_length(HANDLE_MAP(op));
}

static PyObject *
uhandle_iter(PyObject *op)
{
    return umap_iter(HANDLE_MAP(op));
}

static PyObject *
uhandle_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return umap_get(HANDLE_MAP(op), args, nargs);
}

static PyObject *
uhandle_pop(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return umap_pop(HANDLE_MAP(op), args, nargs);
}

static PyObject *
uhandle_setdefault(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return umap_setdefault(HANDLE_MAP(op), args, nargs);
}

static PyObject *
uhandle_get_map(PyObject *op, void *closure)
{
    (void)closure;
    return Py_NewRef(HANDLE_MAP(op));
}

static PyMethodDef uhandle_methods[] = {
    {"get", _PyCFunction_CAST(uhandle_get), METH_FASTCALL,
     "get(key, default=None, /): the map's get."},
    {"pop", _PyCFunction_CAST(uhandle_pop), METH_FASTCALL,
     "pop(key[, default], /): the map's pop."},
    {"setdefault", _PyCFunction_CAST(uhandle_setdefault), METH_FASTCALL,
     "setdefault(key, default=None, /): the map's setdefault."},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, "See PEP 585"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef uhandle_getset[] = {
    {"map", uhandle_get_map, NULL, "the map this handle works on", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot uhandle_slots[] = {
    {Py_tp_new, uhandle_new},
    {Py_tp_dealloc, uhandle_dealloc},
    {Py_tp_traverse, uhandle_traverse},
    {Py_tp_iter, uhandle_iter},
    {Py_tp_methods, uhandle_methods},
    {Py_tp_getset, uhandle_getset},
    {Py_mp_subscript, uhandle_subscript},
    {Py_mp_ass_subscript, uhandle_ass_subscript},
    {Py_mp_length, uhandle_length},
    {Py_sq_contains, uhandle_contains},
    {Py_tp_doc, "The C base of ftmap._unsafe_c.UnsafeMapHandle: the map's hot paths, through a "
                "handle the calling thread owns."},
    {0, NULL},
};

static PyType_Spec uhandle_spec = {
    .name = "ftmap._core.UnsafeMapHandleBase",
    .basicsize = sizeof(UnsafeHandleObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = uhandle_slots,
};

/* -- type specs --------------------------------------------------------------------------------- */

static PyMethodDef umap_methods[] = {
    {"get", _PyCFunction_CAST(umap_get), METH_FASTCALL,
     "get(key, default=None, /): the value for key, or default."},
    {"pop", _PyCFunction_CAST(umap_pop), METH_FASTCALL,
     "pop(key[, default], /): remove key and return its value, or default (KeyError without)."},
    {"setdefault", _PyCFunction_CAST(umap_setdefault), METH_FASTCALL,
     "setdefault(key, default=None, /): the value for key, inserting default if absent."},
    {"_read", _PyCFunction_CAST(umap_read_call), METH_FASTCALL,
     "_read(op, fn, *args): fn(*args), checked as a read named op."},
    {"_write", _PyCFunction_CAST(umap_write_call), METH_FASTCALL | METH_KEYWORDS,
     "_write(op, fn, *args, key=...): fn(*args) as a write named op, under the write claim."},
    {"_iter", _PyCFunction_CAST(umap_iter_method), METH_FASTCALL,
     "_iter(kind, op): a checked iterator (0-5: keys, reversed keys, values, reversed values, "
     "items, reversed items)."},
    {"_reset", umap_reset, METH_O, "_reset(d): the contents become d's (for __init__)."},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, "See PEP 585"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef umap_getset[] = {
    {"_data", umap_get_data, NULL, "the dict holding the content (never replaced)", NULL},
    {"_state", umap_get_state, NULL,
     "{1: ident of the latest writer} and {0: ident of the claimant} during a write (debug)",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot umap_slots[] = {
    {Py_tp_new, umap_new},
    {Py_tp_dealloc, umap_dealloc},
    {Py_tp_traverse, umap_traverse},
    {Py_tp_clear, umap_clear},
    {Py_tp_iter, umap_iter},
    {Py_tp_methods, umap_methods},
    {Py_tp_getset, umap_getset},
    {Py_mp_subscript, umap_subscript},
    {Py_mp_ass_subscript, umap_ass_subscript},
    {Py_mp_length, umap_length},
    {Py_sq_contains, umap_contains},
    {Py_tp_doc, "The C base of ftmap.UnsafeMap (ftmap._unsafe_c): the hot paths and the checks."},
    {0, NULL},
};

static PyType_Spec umap_spec = {
    .name = "ftmap._core.UnsafeMapBase",
    .basicsize = sizeof(UnsafeMapObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = umap_slots,
};

static PyType_Slot uiter_slots[] = {
    {Py_tp_dealloc, uiter_dealloc},
    {Py_tp_traverse, uiter_traverse},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, uiter_next},
#ifdef FTMAP_TEST_HOOKS
    {Py_tp_getset, uiter_getset},
#endif
    {Py_tp_doc, "An UnsafeMap iterator: every step is checked as Go's mapiternext checks."},
    {0, NULL},
};

static PyType_Spec uiter_spec = {
    .name = "ftmap._core.UnsafeMapIterator",
    .basicsize = sizeof(UnsafeIterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = uiter_slots,
};

int
ftmap_unsafemap_exec(PyObject *module, ftmap_state *st)
{
    st->UnsafeMapBaseType = PyType_FromModuleAndSpec(module, &umap_spec, NULL);
    if (st->UnsafeMapBaseType == NULL ||
        PyModule_AddObjectRef(module, "UnsafeMapBase", st->UnsafeMapBaseType) < 0) {
        return -1;
    }
    st->UnsafeMapIteratorType = PyType_FromModuleAndSpec(module, &uiter_spec, NULL);
    if (st->UnsafeMapIteratorType == NULL ||
        PyModule_AddObjectRef(module, "UnsafeMapIterator", st->UnsafeMapIteratorType) < 0) {
        return -1;
    }
    st->UnsafeMapHandleBaseType = PyType_FromModuleAndSpec(module, &uhandle_spec, NULL);
    if (st->UnsafeMapHandleBaseType == NULL ||
        PyModule_AddObjectRef(module, "UnsafeMapHandleBase", st->UnsafeMapHandleBaseType) < 0) {
        return -1;
    }
    return 0;
}
