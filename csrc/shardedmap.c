/* shardedmap.c: ShardedMapBase, the C core of ShardedMap (src/ftmap/_sharded_c.py subclasses it).
 *
 * The pure-Python map (src/ftmap/_sharded.py) is the reference: every method here does the same
 * checks in the same order (marker, recursion, placement, then the dict operations, the same
 * dict operations as the pure map, so a key's __hash__/__eq__ runs as often and where it runs
 * there) and raises the same exceptions with the same messages. The Python subclass keeps the
 * constructor's checks, the many-key operations' bookkeeping, iteration, the views, ==, repr,
 * |, copy and pickling; everything that takes a shard lock is here, because a PyMutex can only
 * be taken from C.
 *
 * Layout: `nshards` shards, each a plain dict and a PyMutex. Reads of one key take no lock: the
 * dict's own API is thread-safe on the free-threaded build (lock-free reads, per-dict critical
 * sections for writes) and runs under the GIL on the default build. Every change to a shard's
 * dict happens with its PyMutex held, so compound operations (compute, merge, ...) are atomic
 * against every other write of the same key's shard.
 *
 * Placement: the default is ftmap_shard_of_hash (csrc/ftmap_fnv.h: FNV-1a 64 over the 8 bytes
 * of hash(key), fmix64, xor-fold, top bits), exactly what the pure map's shard_index computes.
 * With a hasher: hasher(key) & (shards - 1), as the pure map computes it (Python's & and list
 * indexing, including their errors).
 *
 * ---- Re-entrancy and deadlock freedom (the PyMutex is held while user code runs) -----------
 *
 * Like the pure map, a shard's lock is held while Python code runs: the callbacks of compute,
 * merge, ...; a key's __hash__/__eq__ called by the dict operation; __del__ of a value the
 * operation released. Issue 11 allows that only with a proof that it cannot deadlock. Here it is.
 *
 * (1) Owner tracking. A thread that takes a shard lock of map M first pushes a record {M, op}
 *     on its own thread-local list `held_top` (a C stack frame of the locking function, so it
 *     lives exactly as long as the lock is held) and removes it after the unlock. Every method
 *     that may change M (every method that takes one of M's shard locks, in C or through the
 *     Python subclass's check_not_holding) first looks for a record of M on the calling thread's
 *     list and, if there is one, raises RecursiveUpdateError before it takes any lock.
 *     So: a thread never waits for a shard lock of M while it holds one of M's shard locks.
 * (2) Nothing else of ours is waited for under a shard lock: the reads (get, [], in, len,
 *     iteration, shard_sizes, shard_index, compute_if_absent of a present key) take no PyMutex;
 *     the dict API's critical sections are released whenever their thread blocks (3.13's
 *     _PyThreadState_Detach suspends them), and PyMutex_Lock detaches the thread while it waits
 *     (on the default build that releases the GIL), so neither a critical section nor the GIL
 *     can close a cycle with a shard lock.
 * (3) So any wait-for cycle through a shard lock of M must leave M's locks and pass through a
 *     lock or wait the user's code takes while holding M's shard lock (a threading.Lock, a join,
 *     another map's shard lock) that another thread holds while waiting for the same shard of M:
 *     the ordinary "two locks taken in opposite orders" deadlock of the user's own program,
 *     exactly as with the pure map's RLocks (documented in the README).
 * (4) Records are only ever read by their own thread (a thread-local list), and a record names
 *     its map by address while the map is alive: the locking method holds a reference to self
 *     for its whole duration, so an address cannot be reused by another map while a record
 *     naming it exists.
 * Garbage collection and finalizers run on the thread that triggers them, with its records in
 * place: a __del__ that writes M while this thread holds M's shard lock gets RecursiveUpdateError
 * (reported as unraisable), as in the pure map.
 * Not covered: greenlet-style C-stack switching inside a callback while a shard lock is held
 * (another greenlet on the same thread would see the record, correctly refusing to wait for a
 * lock its own thread holds, but records could be unlinked out of order; the unlink below
 * searches the list so that order does not matter, and a switched-out stack keeps its frames).
 *
 * Asynchronous exceptions cannot interrupt C code: between the lock and the unlock only user
 * code can raise, and every such error path unlocks and unlinks before returning. A blocked
 * PyMutex_Lock is not interruptible (KeyboardInterrupt waits until the lock is granted); a
 * shard lock is held for one dict operation plus, for compound operations, one callback.
 */
#include "ftmap_core.h"
#include "ftmap_fnv.h"

#include <stddef.h>

#ifndef _Py_thread_local
#  define _Py_thread_local _Thread_local
#endif

/* The most shards (2**FTMAP_SHARD_BITS_MAX), as the pure map's MAX_SHARDS. */
#define SHARDS_MAX ((Py_ssize_t)1 << FTMAP_SHARD_BITS_MAX)

/* One shard per 64 bytes (a cache line on the machines CPython targets): the shard locks of
 * different shards never share a line, so threads writing different shards (through handles,
 * issue 12) contend on nothing but their own shard's lock and dict. Unpadded, four shards shared
 * a line and disjoint writers bounced it between cores. The cost: 64 bytes a shard. */
#define SHARD_BYTES 64

typedef struct {
    PyMutex mu;     /* the shard lock: serialises every change to dict. Held only by the C
                     * functions below, never across a return to Python. */
    PyObject *dict; /* fixed at setup (a plain dict, never replaced). Content: changed only with
                     * mu held, read by anyone with no lock through the dict API. */
    char padding[SHARD_BYTES - 2 * sizeof(PyObject *)]; /* never read or written */
} shard_t;

_Static_assert(sizeof(shard_t) == SHARD_BYTES, "a shard is one cache line");

typedef struct {
    PyObject_HEAD
    ftmap_state *state; /* fixed at construction (tp_new) */
    shard_t *shards;    /* NULL until _setup; then set once (ftmap_atomic_store_ptr_release, never
                         * replaced or freed before dealloc); read by anyone with
                         * ftmap_atomic_load_ptr_acquire, which also makes the fields below
                         * visible: they are written before that store and never after. */
    Py_ssize_t nshards; /* written once by _setup before `shards` is published */
    unsigned int bits;  /* log2(nshards); written once by _setup before `shards` */
    PyObject *hasher;   /* NULL for the FNV default; written once by _setup before `shards` */
    PyObject *mask;     /* int nshards - 1, for hasher(key) & mask; written once by _setup */
} ShardedMapObject;

/* This thread's held shard locks, newest first (see (1) above). Per thread, no Python objects:
 * not interpreter state (a record names its map by address, and maps of different interpreters
 * have different addresses), so a thread-local is correct under subinterpreters too. Read and
 * written only by its own thread. */
typedef struct held_lock {
    struct held_lock *next;
    const ShardedMapObject *map;
    const char *op;
} held_lock;

static _Py_thread_local held_lock *held_top = NULL;

/* -- errors ------------------------------------------------------------------------------------ */

static PyObject *
not_set_up(void)
{
    PyErr_SetString(PyExc_RuntimeError, "ShardedMap used before __init__ set it up");
    return NULL;
}

/* The RecursiveUpdateError for op, raised while this thread's outer holds a shard lock: built by
 * the Python subclass's _recursive (the same code as the pure map's), a cold path. */
static PyObject *
raise_recursive(ShardedMapObject *self, const char *outer, const char *op)
{
    PyObject *exc = PyObject_CallMethod((PyObject *)self, "_recursive", "ss", outer, op);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* -1 with RecursiveUpdateError set if this thread holds one of self's shard locks, else 0. */
static inline int
check_not_holding(ShardedMapObject *self, const char *op)
{
    for (held_lock *h = held_top; h != NULL; h = h->next) {
        if (h->map == self) {
            raise_recursive(self, h->op, op);
            return -1;
        }
    }
    return 0;
}

/* The ValueError of ftmap._markers.marker_error for storing a marker (value is one). */
static PyObject *
raise_marker(ShardedMapObject *self, PyObject *value, const char *op)
{
    const char *meaning =
        value == self->state->MISSING ? "an absent key" : "removal, returned by a callback";
    PyObject *name = PyType_GetName(Py_TYPE(self));
    if (name != NULL) {
        PyErr_Format(PyExc_ValueError,
                     "%R cannot be stored in a %U (%s): it is ftmap's marker for %s, never a value",
                     value, name, op, meaning);
        Py_DECREF(name);
    }
    return NULL;
}

static inline int
is_marker(ShardedMapObject *self, PyObject *value)
{
    return value == self->state->MISSING || value == self->state->DELETE;
}

/* KeyError(key), as dict raises it (a tuple key stays one argument). */
static void
set_key_error(PyObject *key)
{
    PyObject *args = PyTuple_Pack(1, key);
    if (args != NULL) {
        PyErr_SetObject(PyExc_KeyError, args);
        Py_DECREF(args);
    }
}

/* -- placement --------------------------------------------------------------------------------- */

/* list indexing of the pure map's self._dicts[index], for a hasher's `hasher(key) & mask`. */
static Py_ssize_t
list_index(PyObject *index, Py_ssize_t n)
{
    if (!PyIndex_Check(index)) {
        PyErr_Format(PyExc_TypeError, "list indices must be integers or slices, not %.200s",
                     Py_TYPE(index)->tp_name);
        return -1;
    }
    Py_ssize_t i = PyNumber_AsSsize_t(index, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (i < 0) {
        i += n;
    }
    if (i < 0 || i >= n) {
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        return -1;
    }
    return i;
}

/* key's shard index, or -1 with an exception. Runs user code (__hash__, the hasher): never
 * called with a shard lock held. */
static inline Py_ssize_t
place(ShardedMapObject *self, PyObject *key)
{
    if (self->hasher == NULL) {
        Py_hash_t hash = PyObject_Hash(key);
        if (hash == -1) {
            return -1;
        }
        return (Py_ssize_t)ftmap_shard_of_hash(hash, self->bits);
    }
    PyObject *h = PyObject_CallOneArg(self->hasher, key);
    if (h == NULL) {
        return -1;
    }
    PyObject *masked = PyNumber_And(h, self->mask);
    Py_DECREF(h);
    if (masked == NULL) {
        return -1;
    }
    Py_ssize_t i = list_index(masked, self->nshards);
    Py_DECREF(masked);
    return i;
}

/* The set-up shards, or NULL with RuntimeError (a map whose __init__ has not run). */
static inline shard_t *
shards_of(ShardedMapObject *self)
{
    shard_t *shards = (shard_t *)ftmap_atomic_load_ptr_acquire(&self->shards);
    if (shards == NULL) {
        not_set_up();
    }
    return shards;
}

/* -- the shard lock ---------------------------------------------------------------------------- */

static inline void
shard_lock(ShardedMapObject *self, shard_t *shard, held_lock *rec, const char *op)
{
    rec->map = self;
    rec->op = op;
    rec->next = held_top;
    held_top = rec;
    PyMutex_Lock(&shard->mu);
}

static inline void
shard_unlock(shard_t *shard, held_lock *rec)
{
    PyMutex_Unlock(&shard->mu);
    if (held_top == rec) {
        held_top = rec->next;
        return;
    }
    for (held_lock *h = held_top; h != NULL; h = h->next) { /* out of order: see (4) */
        if (h->next == rec) {
            h->next = rec->next;
            return;
        }
    }
}

/* Recursion check and placement: the shard for a write of key, or NULL with an exception. */
static inline shard_t *
write_shard(ShardedMapObject *self, PyObject *key, const char *op)
{
    shard_t *shards = shards_of(self);
    if (shards == NULL || check_not_holding(self, op) < 0) {
        return NULL;
    }
    Py_ssize_t i = place(self, key);
    return i < 0 ? NULL : &shards[i];
}

/* The pure map's _settle, under the lock: store a callback's result, where a marker leaves the
 * key absent. Steals `result`. Returns the new value or MISSING (new references), or NULL. */
static PyObject *
settle_lock_held(ShardedMapObject *self, PyObject *dict, PyObject *key, PyObject *old,
                 PyObject *result)
{
    if (is_marker(self, result)) {
        Py_DECREF(result); /* a marker: immortal-or-module-owned, no __del__ */
        if (old != NULL && PyDict_DelItem(dict, key) < 0) {
            return NULL;
        }
        return Py_NewRef(self->state->MISSING);
    }
    if (PyDict_SetItem(dict, key, result) < 0) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

/* -- construction ------------------------------------------------------------------------------ */

static PyObject *
sharded_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    ftmap_state *st = ftmap_state_of_type(type);
    if (st == NULL) {
        return NULL;
    }
    ShardedMapObject *self = (ShardedMapObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->state = st;
    return (PyObject *)self;
}

/* _setup(shards, hasher): called once by the subclass's __init__ after it checked shards. */
static PyObject *
sharded_setup(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_setup(shards, hasher)");
        return NULL;
    }
    Py_ssize_t n = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (n < 1 || (n & (n - 1)) != 0 || n > SHARDS_MAX) {
        PyErr_Format(PyExc_ValueError, "shards must be a power of two from 1 to %zd, not %zd",
                     SHARDS_MAX, n);
        return NULL;
    }
    if (ftmap_atomic_load_ptr_acquire(&self->shards) != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a ShardedMap is set up once: __init__ cannot run again on it");
        return NULL;
    }
    PyObject *mask = PyLong_FromSsize_t(n - 1);
    if (mask == NULL) {
        return NULL;
    }
    shard_t *shards = PyMem_Calloc((size_t)n, sizeof(shard_t));
    if (shards == NULL) {
        Py_DECREF(mask);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        shards[i].dict = PyDict_New();
        if (shards[i].dict == NULL) {
            for (Py_ssize_t j = 0; j < i; j++) {
                Py_DECREF(shards[j].dict);
            }
            PyMem_Free(shards);
            Py_DECREF(mask);
            return NULL;
        }
    }
    unsigned int bits = 0;
    while (((Py_ssize_t)1 << bits) < n) {
        bits++;
    }
    /* Two threads racing to set up one map (never done by ftmap itself): the object's critical
     * section serialises them, so exactly one writes the fields and publishes its array, and the
     * other sees it published and frees its own array, which nobody else has seen. (Without it
     * the loser's plain stores of nshards/bits/mask would describe an array that is not the
     * published one: out-of-bounds shard indices.) Nothing in the section runs Python code. */
    int won = 0;
    Py_BEGIN_CRITICAL_SECTION(op);
    if (ftmap_atomic_load_ptr_acquire(&self->shards) == NULL) {
        self->nshards = n;
        self->bits = bits;
        self->hasher = args[1] == Py_None ? NULL : Py_NewRef(args[1]);
        self->mask = mask;
        void *expected = NULL;
        won = ftmap_atomic_cas_ptr(&self->shards, &expected, shards);
    }
    Py_END_CRITICAL_SECTION();
    if (!won) {
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_DECREF(shards[i].dict);
        }
        PyMem_Free(shards);
        Py_DECREF(mask);
        PyErr_SetString(PyExc_RuntimeError,
                        "a ShardedMap is set up once: __init__ cannot run again on it");
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
sharded_traverse(PyObject *op, visitproc visit, void *arg)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    Py_VISIT(Py_TYPE(op));
    shard_t *shards = (shard_t *)ftmap_atomic_load_ptr_acquire(&self->shards);
    if (shards != NULL) {
        for (Py_ssize_t i = 0; i < self->nshards; i++) {
            Py_VISIT(shards[i].dict);
        }
        Py_VISIT(self->hasher);
        Py_VISIT(self->mask);
    }
    return 0;
}

/* tp_clear empties the shard dicts (breaking cycles through values) but keeps them: a method
 * running on another reference to a map being collected still finds its shards. */
static int
sharded_clear(PyObject *op)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    shard_t *shards = (shard_t *)ftmap_atomic_load_ptr_acquire(&self->shards);
    if (shards != NULL) {
        for (Py_ssize_t i = 0; i < self->nshards; i++) {
            PyDict_Clear(shards[i].dict);
        }
    }
    return 0;
}

static void
sharded_dealloc(PyObject *op)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    PyObject_ClearWeakRefs(op);
    shard_t *shards = self->shards; /* the last reference is gone: no other thread */
    if (shards != NULL) {
        for (Py_ssize_t i = 0; i < self->nshards; i++) {
            Py_CLEAR(shards[i].dict);
        }
        PyMem_Free(shards);
        self->shards = NULL;
    }
    Py_CLEAR(self->hasher);
    Py_CLEAR(self->mask);
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* -- reads: no lock ---------------------------------------------------------------------------- */

static PyObject *
sharded_subscript(PyObject *op, PyObject *key)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    shard_t *shards = shards_of(self);
    if (shards == NULL) {
        return NULL;
    }
    Py_ssize_t i = place(self, key);
    if (i < 0) {
        return NULL;
    }
    PyObject *value;
    int found = PyDict_GetItemRef(shards[i].dict, key, &value);
    if (found == 0) {
        set_key_error(key);
    }
    return value;
}

static PyObject *
sharded_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "get expected %s, got %zd",
                     nargs < 1 ? "at least 1 argument" : "at most 2 arguments", nargs);
        return NULL;
    }
    shard_t *shards = shards_of(self);
    if (shards == NULL) {
        return NULL;
    }
    Py_ssize_t i = place(self, args[0]);
    if (i < 0) {
        return NULL;
    }
    PyObject *value;
    int found = PyDict_GetItemRef(shards[i].dict, args[0], &value);
    if (found == 0) {
        return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    }
    return value; /* the value, or NULL with the error */
}

static int
sharded_contains(PyObject *op, PyObject *key)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    shard_t *shards = shards_of(self);
    if (shards == NULL) {
        return -1;
    }
    Py_ssize_t i = place(self, key);
    return i < 0 ? -1 : PyDict_Contains(shards[i].dict, key);
}

static Py_ssize_t
sharded_length(PyObject *op)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    shard_t *shards = shards_of(self);
    if (shards == NULL) {
        return -1;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < self->nshards; i++) {
        total += PyDict_Size(shards[i].dict);
    }
    return total;
}

static PyObject *
sharded_shard_index(PyObject *op, PyObject *key)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (shards_of(self) == NULL) {
        return NULL;
    }
    Py_ssize_t i = place(self, key);
    return i < 0 ? NULL : PyLong_FromSsize_t(i);
}

static PyObject *
sharded_shard_sizes(PyObject *op, PyObject *unused)
{
    (void)unused;
    ShardedMapObject *self = (ShardedMapObject *)op;
    shard_t *shards = shards_of(self);
    if (shards == NULL) {
        return NULL;
    }
    PyObject *sizes = PyList_New(self->nshards);
    if (sizes == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < self->nshards; i++) {
        PyObject *n = PyLong_FromSsize_t(PyDict_Size(shards[i].dict));
        if (n == NULL) {
            Py_DECREF(sizes);
            return NULL;
        }
        PyList_SET_ITEM(sizes, i, n);
    }
    return sizes;
}

/* _dicts: the shard dicts as a new tuple, for iteration (the subclass copies each with
 * list(d.items()), lock-free). Raises AttributeError before _setup, as the pure map's would. */
static PyObject *
sharded_get_dicts(PyObject *op, void *closure)
{
    (void)closure;
    ShardedMapObject *self = (ShardedMapObject *)op;
    shard_t *shards = (shard_t *)ftmap_atomic_load_ptr_acquire(&self->shards);
    if (shards == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_dicts");
        return NULL;
    }
    PyObject *dicts = PyTuple_New(self->nshards);
    if (dicts == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < self->nshards; i++) {
        PyTuple_SET_ITEM(dicts, i, Py_NewRef(shards[i].dict));
    }
    return dicts;
}

static PyObject *
sharded_get_shards(PyObject *op, void *closure)
{
    (void)closure;
    ShardedMapObject *self = (ShardedMapObject *)op;
    return shards_of(self) == NULL ? NULL : PyLong_FromSsize_t(self->nshards);
}

static PyObject *
sharded_get_hasher(PyObject *op, void *closure)
{
    (void)closure;
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (shards_of(self) == NULL) {
        return NULL;
    }
    return Py_NewRef(self->hasher == NULL ? Py_None : self->hasher);
}

/* _debug_state(): {"shards": n, "marked": {ident: op} for this thread if it holds one of this
 * map's shard locks, "locked": [indices of shards whose lock anyone holds]}. For the tests. */
static PyObject *
sharded_debug_state(PyObject *op, PyObject *unused)
{
    (void)unused;
    ShardedMapObject *self = (ShardedMapObject *)op;
    shard_t *shards = (shard_t *)ftmap_atomic_load_ptr_acquire(&self->shards);
    if (shards == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_debug_state: not set up");
        return NULL;
    }
    PyObject *marked = PyDict_New();
    PyObject *locked = PyList_New(0);
    PyObject *result = NULL;
    if (marked == NULL || locked == NULL) {
        goto done;
    }
    for (held_lock *h = held_top; h != NULL; h = h->next) {
        if (h->map == self) {
            PyObject *ident = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
            PyObject *name = PyUnicode_FromString(h->op);
            int rc = (ident == NULL || name == NULL) ? -1 : PyDict_SetItem(marked, ident, name);
            Py_XDECREF(ident);
            Py_XDECREF(name);
            if (rc < 0) {
                goto done;
            }
            break;
        }
    }
    for (Py_ssize_t i = 0; i < self->nshards; i++) {
        /* PyMutex's low bit is _Py_LOCKED (Include/cpython/lock.h; private, a test hook). */
        if (_Py_atomic_load_uint8_relaxed(&shards[i].mu._bits) & 1) {
            PyObject *n = PyLong_FromSsize_t(i);
            int rc = n == NULL ? -1 : PyList_Append(locked, n);
            Py_XDECREF(n);
            if (rc < 0) {
                goto done;
            }
        }
    }
    result = Py_BuildValue("{s:n,s:O,s:O}", "shards", self->nshards, "marked", marked, "locked",
                           locked);
done:
    Py_XDECREF(marked);
    Py_XDECREF(locked);
    return result;
}

/* _check_not_holding(op): RecursiveUpdateError if this thread holds one of this map's shard
 * locks (for the subclass's many-key operations, before they do anything). */
static PyObject *
sharded_check_not_holding(PyObject *op, PyObject *name)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    const char *opname = PyUnicode_AsUTF8(name);
    if (opname == NULL || check_not_holding(self, opname) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- single-key writes: the shard lock ----------------------------------------------------------- */

static int
sharded_ass_subscript(PyObject *op, PyObject *key, PyObject *value)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    const char *name = value == NULL ? "delete" : "set";
    if (value != NULL && is_marker(self, value)) {
        raise_marker(self, value, "set");
        return -1;
    }
    shard_t *shard = write_shard(self, key, name);
    if (shard == NULL) {
        return -1;
    }
    held_lock rec;
    int rc;
    shard_lock(self, shard, &rec, name);
    if (value == NULL) {
        rc = PyDict_DelItem(shard->dict, key); /* KeyError(key) as dict raises it */
    }
    else {
        rc = PyDict_SetItem(shard->dict, key, value);
    }
    shard_unlock(shard, &rec);
    return rc;
}

static PyObject *
sharded_pop(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "pop expected %s, got %zd",
                     nargs < 1 ? "at least 1 argument" : "at most 2 arguments", nargs);
        return NULL;
    }
    shard_t *shard = write_shard(self, args[0], "pop");
    if (shard == NULL) {
        return NULL;
    }
    held_lock rec;
    PyObject *value;
    shard_lock(self, shard, &rec, "pop");
    int found = PyDict_Pop(shard->dict, args[0], &value);
    shard_unlock(shard, &rec);
    if (found == 0) {
        if (nargs == 2) {
            return Py_NewRef(args[1]);
        }
        set_key_error(args[0]);
        return NULL;
    }
    return value; /* or NULL with the error */
}

static PyObject *
sharded_setdefault(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "setdefault expected %s, got %zd",
                     nargs < 1 ? "at least 1 argument" : "at most 2 arguments", nargs);
        return NULL;
    }
    PyObject *dflt = nargs == 2 ? args[1] : Py_None;
    if (is_marker(self, dflt)) {
        return raise_marker(self, dflt, "setdefault");
    }
    shard_t *shard = write_shard(self, args[0], "setdefault");
    if (shard == NULL) {
        return NULL;
    }
    held_lock rec;
    PyObject *result;
    shard_lock(self, shard, &rec, "setdefault");
    int rc = PyDict_SetDefaultRef(shard->dict, args[0], dflt, &result);
    shard_unlock(shard, &rec);
    return rc < 0 ? NULL : result;
}

static int
unpack(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", name,
                     expected, nargs);
        return -1;
    }
    return 0;
}

static PyObject *
sharded_set_if_absent(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (unpack("set_if_absent", nargs, 2) < 0) {
        return NULL;
    }
    PyObject *key = args[0], *value = args[1];
    if (is_marker(self, value)) {
        return raise_marker(self, value, "set_if_absent");
    }
    shard_t *shard = write_shard(self, key, "set_if_absent");
    if (shard == NULL) {
        return NULL;
    }
    held_lock rec;
    PyObject *result = NULL;
    shard_lock(self, shard, &rec, "set_if_absent");
    int present = PyDict_Contains(shard->dict, key);
    if (present == 0) {
        if (PyDict_SetItem(shard->dict, key, value) == 0) {
            result = Py_True;
        }
    }
    else if (present == 1) {
        result = Py_False;
    }
    shard_unlock(shard, &rec);
    return result; /* bools are immortal */
}

/* replace (new != NULL) and remove (new == NULL): the value compared by identity, then ==. */
static PyObject *
replace_or_remove(ShardedMapObject *self, const char *name, PyObject *key, PyObject *old,
                  PyObject *new)
{
    shard_t *shard = write_shard(self, key, name);
    if (shard == NULL) {
        return NULL;
    }
    held_lock rec;
    PyObject *result = NULL;
    PyObject *current = NULL;
    shard_lock(self, shard, &rec, name);
    int found = PyDict_GetItemRef(shard->dict, key, &current);
    if (found == 0) {
        result = Py_False;
    }
    else if (found == 1) {
        int same = PyObject_RichCompareBool(current, old, Py_EQ); /* a is b or bool(a == b) */
        if (same == 0) {
            result = Py_False;
        }
        else if (same == 1) {
            int rc = new == NULL ? PyDict_DelItem(shard->dict, key)
                                 : PyDict_SetItem(shard->dict, key, new);
            result = rc < 0 ? NULL : Py_True;
        }
    }
    shard_unlock(shard, &rec);
    Py_XDECREF(current); /* after the unlock, as a last reference's __del__ may run */
    return result;
}

static PyObject *
sharded_replace(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (unpack("replace", nargs, 3) < 0) {
        return NULL;
    }
    if (is_marker(self, args[2])) {
        return raise_marker(self, args[2], "replace");
    }
    return replace_or_remove(self, "replace", args[0], args[1], args[2]);
}

static PyObject *
sharded_remove(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (unpack("remove", nargs, 2) < 0) {
        return NULL;
    }
    return replace_or_remove((ShardedMapObject *)op, "remove", args[0], args[1], NULL);
}

/* -- compound operations: the callback runs with the shard lock held (see the top) ------------- */

static PyObject *
sharded_compute(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (unpack("compute", nargs, 2) < 0) {
        return NULL;
    }
    PyObject *key = args[0], *fn = args[1];
    shard_t *shard = write_shard(self, key, "compute");
    if (shard == NULL) {
        return NULL;
    }
    held_lock rec;
    PyObject *result = NULL;
    PyObject *old = NULL;
    shard_lock(self, shard, &rec, "compute");
    if (PyDict_GetItemRef(shard->dict, key, &old) >= 0) {
        PyObject *new = PyObject_CallOneArg(fn, old == NULL ? self->state->MISSING : old);
        if (new != NULL) {
            result = settle_lock_held(self, shard->dict, key, old, new);
        }
    }
    shard_unlock(shard, &rec);
    Py_XDECREF(old);
    return result;
}

/* compute_if_absent: a present key is read with no lock (so it works inside callbacks); else
 * the factory runs under the lock, at most once per absent key. Placement runs twice, as in the
 * pure map (its get, then its _write). */
static PyObject *
sharded_compute_if_absent(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (unpack("compute_if_absent", nargs, 2) < 0) {
        return NULL;
    }
    PyObject *key = args[0], *factory = args[1];
    shard_t *shards = shards_of(self);
    if (shards == NULL) {
        return NULL;
    }
    Py_ssize_t i = place(self, key);
    if (i < 0) {
        return NULL;
    }
    PyObject *value;
    int found = PyDict_GetItemRef(shards[i].dict, key, &value);
    if (found != 0) {
        return value; /* present, or NULL with the error */
    }
    shard_t *shard = write_shard(self, key, "compute_if_absent");
    if (shard == NULL) {
        return NULL;
    }
    held_lock rec;
    PyObject *result = NULL;
    shard_lock(self, shard, &rec, "compute_if_absent");
    found = PyDict_GetItemRef(shard->dict, key, &value);
    if (found == 1) {
        result = value;
    }
    else if (found == 0) {
        value = PyObject_CallOneArg(factory, key);
        if (value != NULL && is_marker(self, value)) {
            Py_DECREF(value);
            result = Py_NewRef(self->state->MISSING);
        }
        else if (value != NULL) {
            if (PyDict_SetItem(shard->dict, key, value) < 0) {
                Py_DECREF(value);
            }
            else {
                result = value;
            }
        }
    }
    shard_unlock(shard, &rec);
    return result;
}

static PyObject *
sharded_compute_if_present(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (unpack("compute_if_present", nargs, 2) < 0) {
        return NULL;
    }
    PyObject *key = args[0], *fn = args[1];
    shard_t *shard = write_shard(self, key, "compute_if_present");
    if (shard == NULL) {
        return NULL;
    }
    held_lock rec;
    PyObject *result = NULL;
    PyObject *old = NULL;
    shard_lock(self, shard, &rec, "compute_if_present");
    int found = PyDict_GetItemRef(shard->dict, key, &old);
    if (found == 0) {
        result = Py_NewRef(self->state->MISSING);
    }
    else if (found == 1) {
        PyObject *new = PyObject_CallOneArg(fn, old);
        if (new != NULL) {
            result = settle_lock_held(self, shard->dict, key, old, new);
        }
    }
    shard_unlock(shard, &rec);
    Py_XDECREF(old);
    return result;
}

static PyObject *
sharded_merge(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (unpack("merge", nargs, 3) < 0) {
        return NULL;
    }
    PyObject *key = args[0], *value = args[1], *fn = args[2];
    if (is_marker(self, value)) {
        return raise_marker(self, value, "merge");
    }
    shard_t *shard = write_shard(self, key, "merge");
    if (shard == NULL) {
        return NULL;
    }
    held_lock rec;
    PyObject *result = NULL;
    PyObject *old = NULL;
    shard_lock(self, shard, &rec, "merge");
    int found = PyDict_GetItemRef(shard->dict, key, &old);
    if (found == 0) {
        if (PyDict_SetItem(shard->dict, key, value) == 0) {
            result = Py_NewRef(value);
        }
    }
    else if (found == 1) {
        PyObject *stack[2] = {old, value};
        PyObject *new = PyObject_Vectorcall(fn, stack, 2, NULL);
        if (new != NULL) {
            result = settle_lock_held(self, shard->dict, key, old, new);
        }
    }
    shard_unlock(shard, &rec);
    Py_XDECREF(old);
    return result;
}

static PyObject *
sharded_upsert(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (unpack("upsert", nargs, 3) < 0) {
        return NULL;
    }
    PyObject *key = args[0], *value = args[1], *cb = args[2];
    shard_t *shard = write_shard(self, key, "upsert");
    if (shard == NULL) {
        return NULL;
    }
    held_lock rec;
    PyObject *result = NULL;
    PyObject *old = NULL;
    shard_lock(self, shard, &rec, "upsert");
    int found = PyDict_GetItemRef(shard->dict, key, &old);
    if (found >= 0) {
        PyObject *stack[3] = {found ? Py_True : Py_False, found ? old : Py_None, value};
        PyObject *new = PyObject_Vectorcall(cb, stack, 3, NULL);
        if (new != NULL) {
            result = settle_lock_held(self, shard->dict, key, old, new);
        }
    }
    shard_unlock(shard, &rec);
    Py_XDECREF(old);
    return result;
}

static PyObject *
sharded_remove_if(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (unpack("remove_if", nargs, 2) < 0) {
        return NULL;
    }
    PyObject *key = args[0], *predicate = args[1];
    shard_t *shard = write_shard(self, key, "remove_if");
    if (shard == NULL) {
        return NULL;
    }
    held_lock rec;
    PyObject *result = NULL;
    PyObject *old = NULL;
    shard_lock(self, shard, &rec, "remove_if");
    int found = PyDict_GetItemRef(shard->dict, key, &old);
    if (found >= 0) {
        PyObject *stack[3] = {key, found ? old : Py_None, found ? Py_True : Py_False};
        PyObject *verdict = PyObject_Vectorcall(predicate, stack, 3, NULL);
        if (verdict != NULL) {
            int truth = PyObject_IsTrue(verdict); /* `predicate(...) and exists` */
            Py_DECREF(verdict); /* under the lock, as the pure map drops it there */
            if (truth == 0 || (truth == 1 && !found)) {
                result = Py_False;
            }
            else if (truth == 1) {
                result = PyDict_DelItem(shard->dict, key) < 0 ? NULL : Py_True;
            }
        }
    }
    shard_unlock(shard, &rec);
    Py_XDECREF(old);
    return result;
}

/* -- many keys ----------------------------------------------------------------------------------- */

/* _update_shard(op, index, pairs): dict.update(pairs) on shard index under its lock (the
 * subclass's mset/update: checked, placed and grouped in Python first). */
static PyObject *
sharded_update_shard(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    ShardedMapObject *self = (ShardedMapObject *)op;
    if (unpack("_update_shard", nargs, 3) < 0) {
        return NULL;
    }
    const char *name = PyUnicode_AsUTF8(args[0]);
    if (name == NULL) {
        return NULL;
    }
    shard_t *shards = shards_of(self);
    if (shards == NULL || check_not_holding(self, name) < 0) {
        return NULL;
    }
    Py_ssize_t i = PyNumber_AsSsize_t(args[1], PyExc_IndexError);
    if (i == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (i < 0 || i >= self->nshards) {
        PyErr_SetString(PyExc_IndexError, "shard index out of range");
        return NULL;
    }
    held_lock rec;
    shard_lock(self, &shards[i], &rec, name);
    int rc = PyDict_MergeFromSeq2(shards[i].dict, args[2], 1);
    shard_unlock(&shards[i], &rec);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
sharded_clear_all(PyObject *op, PyObject *unused)
{
    (void)unused;
    ShardedMapObject *self = (ShardedMapObject *)op;
    shard_t *shards = shards_of(self);
    if (shards == NULL || check_not_holding(self, "clear") < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < self->nshards; i++) {
        if (PyDict_Size(shards[i].dict) == 0) {
            continue; /* an empty shard needs no lock: nothing to remove */
        }
        held_lock rec;
        shard_lock(self, &shards[i], &rec, "clear");
        PyDict_Clear(shards[i].dict); /* values' __del__ run here, marked: as the pure map */
        shard_unlock(&shards[i], &rec);
    }
    Py_RETURN_NONE;
}

static PyObject *
sharded_popitem(PyObject *op, PyObject *unused)
{
    (void)unused;
    ShardedMapObject *self = (ShardedMapObject *)op;
    shard_t *shards = shards_of(self);
    if (shards == NULL || check_not_holding(self, "popitem") < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < self->nshards; i++) {
        if (PyDict_Size(shards[i].dict) == 0) {
            continue; /* looked at without the lock, then again under it */
        }
        held_lock rec;
        PyObject *item = NULL;
        int empty = 0;
        shard_lock(self, &shards[i], &rec, "popitem");
        if (PyDict_Size(shards[i].dict) == 0) {
            empty = 1;
        }
        else {
            item = PyObject_CallMethod(shards[i].dict, "popitem", NULL); /* no user code */
        }
        shard_unlock(&shards[i], &rec);
        if (!empty) {
            return item;
        }
    }
    PyErr_SetString(PyExc_KeyError, "popitem(): ShardedMap is empty");
    return NULL;
}

/* -- the type ------------------------------------------------------------------------------------ */

static PyMethodDef sharded_methods[] = {
    {"get", _PyCFunction_CAST(sharded_get), METH_FASTCALL, NULL},
    {"pop", _PyCFunction_CAST(sharded_pop), METH_FASTCALL, NULL},
    {"setdefault", _PyCFunction_CAST(sharded_setdefault), METH_FASTCALL,
     "Atomic: the existing value, or default stored and returned."},
    {"set_if_absent", _PyCFunction_CAST(sharded_set_if_absent), METH_FASTCALL,
     "Store value if key is absent; True if it was stored (orcaman's SetIfAbsent)."},
    {"replace", _PyCFunction_CAST(sharded_replace), METH_FASTCALL,
     "Set new if key's value is old (identity, then ==); True if replaced."},
    {"remove", _PyCFunction_CAST(sharded_remove), METH_FASTCALL,
     "Delete key if its value is old (identity, then ==); True if removed."},
    {"compute", _PyCFunction_CAST(sharded_compute), METH_FASTCALL,
     "Atomically set key to fn(value or MISSING); DELETE or MISSING leaves it absent.\n\n"
     "Returns the new value, or MISSING if the key ends absent."},
    {"compute_if_absent", _PyCFunction_CAST(sharded_compute_if_absent), METH_FASTCALL,
     "key's value; if absent, store factory(key) first and return it.\n\n"
     "factory runs at most once per absent key, under contention too. If it\n"
     "returns MISSING or DELETE nothing is stored and MISSING is returned. A\n"
     "present key is read without a lock (so this works inside callbacks)."},
    {"compute_if_present", _PyCFunction_CAST(sharded_compute_if_present), METH_FASTCALL,
     "If key is present, set it to fn(value) (DELETE or MISSING removes it); the new value or "
     "MISSING."},
    {"merge", _PyCFunction_CAST(sharded_merge), METH_FASTCALL,
     "Store value if key is absent, else fn(old, value) (DELETE or MISSING removes it); the "
     "result."},
    {"upsert", _PyCFunction_CAST(sharded_upsert), METH_FASTCALL,
     "Store cb(exists, old or None, value) and return it (orcaman's Upsert).\n\n"
     "cb returning MISSING or DELETE leaves the key absent, and MISSING is returned."},
    {"remove_if", _PyCFunction_CAST(sharded_remove_if), METH_FASTCALL,
     "Delete key if predicate(key, value or None, exists) is true; True if removed.\n\n"
     "orcaman's RemoveCb: the predicate is called even when the key is absent."},
    {"clear", sharded_clear_all, METH_NOARGS, "Empty every shard, one after another."},
    {"popitem", sharded_popitem, METH_NOARGS,
     "Remove and return some (key, value); KeyError if every shard is empty."},
    {"shard_index", sharded_shard_index, METH_O, "The shard that holds (or would hold) key."},
    {"shard_sizes", sharded_shard_sizes, METH_NOARGS, "Each shard's number of keys, shard by shard."},
    {"_setup", _PyCFunction_CAST(sharded_setup), METH_FASTCALL, NULL},
    {"_update_shard", _PyCFunction_CAST(sharded_update_shard), METH_FASTCALL, NULL},
    {"_check_not_holding", sharded_check_not_holding, METH_O, NULL},
    {"_debug_state", sharded_debug_state, METH_NOARGS, NULL},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sharded_getset[] = {
    {"_dicts", sharded_get_dicts, NULL, NULL, NULL},
    {"_hasher", sharded_get_hasher, NULL, NULL, NULL},
    {"shards", sharded_get_shards, NULL, "The number of shards.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot sharded_slots[] = {
    {Py_tp_new, sharded_new},
    {Py_tp_dealloc, sharded_dealloc},
    {Py_tp_traverse, sharded_traverse},
    {Py_tp_clear, sharded_clear},
    {Py_tp_methods, sharded_methods},
    {Py_tp_getset, sharded_getset},
    {Py_mp_subscript, sharded_subscript},
    {Py_mp_ass_subscript, sharded_ass_subscript},
    {Py_mp_length, sharded_length},
    {Py_sq_contains, sharded_contains},
    {Py_tp_doc, "The C core of ftmap.ShardedMap (use ftmap.ShardedMap)."},
    {0, NULL},
};

static PyType_Spec sharded_spec = {
    .name = "ftmap._core.ShardedMapBase",
    .basicsize = sizeof(ShardedMapObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_MANAGED_WEAKREF | Py_TPFLAGS_MAPPING,
    .slots = sharded_slots,
};

/* -- ShardedMapHandleBase: the per-thread handle (issue 12) --------------------------------------
 *
 * A handle holds a strong reference to its map and runs the map's own C functions on it (the same
 * code, so the same checks, results, exceptions, messages and re-entrancy marks: the marks are
 * the thread-local held_top records, per thread whichever object the call came through). Its
 * point is the reference count: calling a method of a map shared by many threads writes the
 * map's shared count on every call (the interpreter increfs `self`), while a handle made by a
 * thread is that thread's object (biased reference counting: its own count, no atomics), and
 * the functions below touch no other count but what the returned value needs. The map's fixed
 * parts are read without a lock (shards_of: one acquire load; the array never changes while
 * the map lives, see ShardedMapObject.shards; the handle's strong reference keeps it alive).
 *
 * No per-handle mutable state: nothing to protect, so a handle shared by several threads is as
 * correct as the map (it is only slower there: its count is shared then).
 */

typedef struct {
    PyObject_HEAD
    PyObject *map; /* a set-up ShardedMapBase instance, strong; fixed at construction (tp_new)
                    * and kept until dealloc (tp_clear leaves it: a method running on another
                    * reference must still find it). Read by anyone with no lock. */
} ShardedHandleObject;

static inline PyObject *
handle_map(PyObject *op)
{
    return ((ShardedHandleObject *)op)->map;
}

static PyObject *
handle_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    ftmap_state *st = ftmap_state_of_type(type);
    if (st == NULL) {
        return NULL;
    }
    PyObject *map;
    static char *kwlist[] = {"map", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:ShardedMapHandle", kwlist, &map)) {
        return NULL;
    }
    if (!PyObject_TypeCheck(map, (PyTypeObject *)st->ShardedMapBaseType)) {
        PyErr_Format(PyExc_TypeError, "ShardedMapHandle needs a C ShardedMap, not %.200s",
                     Py_TYPE(map)->tp_name);
        return NULL;
    }
    if (shards_of((ShardedMapObject *)map) == NULL) {
        return NULL; /* not set up: RuntimeError */
    }
    ShardedHandleObject *self = (ShardedHandleObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->map = Py_NewRef(map);
    return (PyObject *)self;
}

static int
handle_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(handle_map(op));
    return 0;
}

static void
handle_dealloc(PyObject *op)
{
    ShardedHandleObject *self = (ShardedHandleObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    Py_CLEAR(self->map);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
handle_subscript(PyObject *op, PyObject *key)
{
    return sharded_subscript(handle_map(op), key);
}

static int
handle_ass_subscript(PyObject *op, PyObject *key, PyObject *value)
{
    return sharded_ass_subscript(handle_map(op), key, value);
}

static int
handle_contains(PyObject *op, PyObject *key)
{
    return sharded_contains(handle_map(op), key);
}

static Py_ssize_t
handle_length(PyObject *op)
{
    return sharded_length(handle_map(op));
}

#define FTMAP_HANDLE_FASTCALL(name)                                                               \
    static PyObject *handle_##name(PyObject *op, PyObject *const *args, Py_ssize_t nargs)       \
    {                                                                                             \
        return sharded_##name(handle_map(op), args, nargs);                                       \
    }
FTMAP_HANDLE_FASTCALL(get)
FTMAP_HANDLE_FASTCALL(pop)
FTMAP_HANDLE_FASTCALL(setdefault)
FTMAP_HANDLE_FASTCALL(set_if_absent)
FTMAP_HANDLE_FASTCALL(replace)
FTMAP_HANDLE_FASTCALL(remove)
FTMAP_HANDLE_FASTCALL(compute)
FTMAP_HANDLE_FASTCALL(compute_if_absent)
FTMAP_HANDLE_FASTCALL(compute_if_present)
FTMAP_HANDLE_FASTCALL(merge)
FTMAP_HANDLE_FASTCALL(upsert)
FTMAP_HANDLE_FASTCALL(remove_if)
#undef FTMAP_HANDLE_FASTCALL

static PyObject *
handle_get_map(PyObject *op, void *closure)
{
    (void)closure;
    return Py_NewRef(handle_map(op));
}

#define FTMAP_HANDLE_METHOD(name) \
    {#name, _PyCFunction_CAST(handle_##name), METH_FASTCALL, NULL}
static PyMethodDef handle_methods[] = {
    FTMAP_HANDLE_METHOD(get),
    FTMAP_HANDLE_METHOD(pop),
    FTMAP_HANDLE_METHOD(setdefault),
    FTMAP_HANDLE_METHOD(set_if_absent),
    FTMAP_HANDLE_METHOD(replace),
    FTMAP_HANDLE_METHOD(remove),
    FTMAP_HANDLE_METHOD(compute),
    FTMAP_HANDLE_METHOD(compute_if_absent),
    FTMAP_HANDLE_METHOD(compute_if_present),
    FTMAP_HANDLE_METHOD(merge),
    FTMAP_HANDLE_METHOD(upsert),
    FTMAP_HANDLE_METHOD(remove_if),
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, NULL},
    {NULL, NULL, 0, NULL},
};
#undef FTMAP_HANDLE_METHOD

static PyGetSetDef handle_getset[] = {
    {"map", handle_get_map, NULL, "The map this handle works on.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot handle_slots[] = {
    {Py_tp_new, handle_new},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_methods, handle_methods},
    {Py_tp_getset, handle_getset},
    {Py_mp_subscript, handle_subscript},
    {Py_mp_ass_subscript, handle_ass_subscript},
    {Py_mp_length, handle_length},
    {Py_sq_contains, handle_contains},
    {Py_tp_doc, "The C core of ftmap.ShardedMapHandle (use ShardedMap.handle())."},
    {0, NULL},
};

static PyType_Spec handle_spec = {
    .name = "ftmap._core.ShardedMapHandleBase",
    .basicsize = sizeof(ShardedHandleObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_MAPPING,
    .slots = handle_slots,
};

int
ftmap_shardedmap_exec(PyObject *module, ftmap_state *st)
{
    st->ShardedMapBaseType = PyType_FromModuleAndSpec(module, &sharded_spec, NULL);
    if (st->ShardedMapBaseType == NULL ||
        PyModule_AddObjectRef(module, "ShardedMapBase", st->ShardedMapBaseType) < 0) {
        return -1;
    }
    st->ShardedMapHandleBaseType = PyType_FromModuleAndSpec(module, &handle_spec, NULL);
    if (st->ShardedMapHandleBaseType == NULL ||
        PyModule_AddObjectRef(module, "ShardedMapHandleBase", st->ShardedMapHandleBaseType) < 0) {
        return -1;
    }
    return 0;
}
