/* syncmap.c: SyncMap's C core: the entries (Go's CAS on the value pointer) and the hot paths.
 *
 * Go's classic sync.Map (src/sync/map.go, Go 1.23), split as docs/c-core.md allows:
 *
 *   ftmap._core._SyncEntry  an entry: its value pointer is nil (NULL: deleted), expunged (the
 *                           module's expunged sentinel) or a value, changed only by
 *                           compare-and-swap (ftmap_ref_cas). No entry lock: Go's design.
 *   ftmap._core._SyncRead   the published read map: the read tuple and ftmap's own immutable
 *                           lookup table of it (keys, entries), probed without touching the
 *                           entry's reference count (issue 12; the why is beside its struct).
 *   ftmap._core.SyncMapBase the read map, published by one atomic store (an ftmap_ref), and the
 *                           lock-free hot paths: m[k], get, in, load on a read-map hit, and
 *                           m[k] = v / store to a read-map key that is not expunged.
 *   ftmap._core.SyncMapHandleBase  a per-thread handle (issue 12): the same hot paths through a
 *                           cached read map (ftmap_ref_load_cached, guarded by a busy flag; the
 *                           protocol and its proof are beside its struct). ftmap._sync_c's
 *                           SyncMapHandle (Python) subclasses it and gives the other operations
 *                           to the map.
 *   ftmap._sync_c.SyncMap   (Python, subclass of SyncMapBase) everything that takes the mutex:
 *                           the dirty map, misses and promotion, the re-entrancy rule, len/bool,
 *                           iteration, stats, _debug_state. The same code as the pure map
 *                           (src/ftmap/_sync.py), on these entries.
 *
 * The mutex is the Python subclass's RLock, never a PyMutex: nothing in this file takes any lock,
 * so no user __hash__/__eq__/__del__ can ever run under a lock held by C code. User code runs
 * here only in the read map's lookup (key __hash__/__eq__: the read table's PyObject_Hash and
 * PyObject_RichCompareBool, or PyDict_GetItemRef without a table; no lock held),
 * PyObject_RichCompareBool (value __eq__ in compare_and_set, no lock held) and Py_DECREF of a
 * replaced value or read map (no lock).
 *
 * Memory safety: two kinds of reference are replaced while other threads read them without a lock.
 *   - the read map (SyncMapBase.read): a _SyncRead (the tuple (m, amended) and its lookup table),
 *     replaced by the mutex holder through the _read setter (ftmap_ref_exchange); readers use
 *     ftmap_ref_load, or a handle's cache. A _SyncRead never changes and owns a reference to
 *     every key and entry in its table, so while a reader holds it, the key and entry pointers
 *     its lookup returns are alive (borrowed: no count of the entry is touched). Without a table
 *     the lookup is the dict's, which returns a new reference to the entry (PyDict_GetItemRef,
 *     lock-free on 3.13t; the Python code never mutates a published dict anyway).
 *   - an entry's value (_SyncEntry.p): replaced by any thread with ftmap_ref_cas; read with
 *     ftmap_ref_load (never a plain load-then-incref). A CAS's expected pointer is either a raw
 *     load that is only compared, never dereferenced (ftmap_ref_cas then proves the slot still
 *     held it, and transfers the slot's reference to the caller), or a pointer the caller holds a
 *     reference to (compare_and_set: no ABA, ftmap_ref.h claim (c)).
 * The slot owns a reference to whatever non-NULL pointer it holds, the expunged sentinel
 * included, so every CAS that takes a pointer out of the slot owns one reference to release.
 */
#include "ftmap_core.h"
#include "ftmap_ref.h"

/* -- _SyncEntry -------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    ftmap_state *state; /* fixed at construction (the module outlives the entry: it holds its
                         * type, the type holds the module) */
    PyObject *key;      /* fixed at construction: the key object this entry is stored under, in the
                         * read and the dirty map alike (keeps the key alive while the mutex holder
                         * drops it from a dict) */
    ftmap_ref p;        /* NULL (Go's nil: deleted), st->SyncExpunged (Go's expunged: deleted, the
                         * map has a dirty map and this entry is not in it), or the value.
                         * Written by any thread with ftmap_ref_cas, except: NULL -> expunged and
                         * expunged -> NULL only by the holder of the map's mutex
                         * (try_expunge_locked / unexpunge_locked). Read by anyone, no lock:
                         * ftmap_ref_load for a reference, entry_peek for a pointer to compare. */
} SyncEntry;

/* The pointer the slot holds, only to compare with (CAS expected, NULL, expunged): never
 * dereferenced, so a concurrent replacement cannot make it a use after free (a pointer that a CAS
 * then swaps out is owned by the caller: ftmap_ref_cas proved the slot held it). This is
 * ftmap_ref_borrow_lock_held's relaxed atomic load, used without a lock for exactly that reason:
 * what it returns is never read through unless the following CAS succeeds. */
static inline PyObject *
entry_peek(SyncEntry *e)
{
    return ftmap_ref_borrow_lock_held(&e->p);
}

/* A new reference to the live value, or NULL (no exception) if deleted or expunged. */
static inline PyObject *
entry_value(SyncEntry *e, PyObject *expunged)
{
    PyObject *v = ftmap_ref_load(&e->p);
    if (v == expunged) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
}

/* Go's trySwap, unconditional unless expunged: steals value. Returns the slot's old reference
 * (NULL if it was deleted) in *previous and 1, or 0 if expunged (value not stolen: released). */
static inline int
entry_try_swap(SyncEntry *e, PyObject *value, PyObject **previous)
{
    PyObject *expunged = e->state->SyncExpunged;
    for (;;) {
        PyObject *old = entry_peek(e);
        if (old == expunged) {
            Py_XDECREF(value); /* NULL: the caller asked to swap in "deleted" */
            return 0;
        }
        if (ftmap_ref_cas(&e->p, old, value)) {
            *previous = old; /* the slot's reference, ours now: released by the caller */
            return 1;
        }
    }
}

static PyObject *
entry_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *key, *value;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "_SyncEntry() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "_SyncEntry", 2, 2, &key, &value)) {
        return NULL;
    }
    ftmap_state *st = ftmap_state_of_type(type);
    if (st == NULL) {
        return NULL;
    }
    SyncEntry *self = (SyncEntry *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->state = st;
    self->key = Py_NewRef(key);
    ftmap_ref_init(&self->p, value == st->SyncDeleted ? NULL : Py_NewRef(value));
    return (PyObject *)self;
}

static int
entry_traverse(PyObject *op, visitproc visit, void *arg)
{
    SyncEntry *self = (SyncEntry *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->key);
    ftmap_ref_visit(&self->p);
    return 0;
}

static int
entry_clear(PyObject *op)
{
    SyncEntry *self = (SyncEntry *)op;
    ftmap_ref_clear(&self->p);
    Py_CLEAR(self->key);
    return 0;
}

static void
entry_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)entry_clear(op);
    type->tp_free(op);
    Py_DECREF(type);
}

/* A value as Python sees it: the value, or the DELETED sentinel. Steals v (may be NULL). */
static inline PyObject *
entry_out(SyncEntry *e, PyObject *v)
{
    return v == NULL ? Py_NewRef(e->state->SyncDeleted) : v;
}

/* try_swap(value): the previous value (or DELETED); EXPUNGED if the entry is expunged. */
static PyObject *
entry_try_swap_py(PyObject *op, PyObject *value)
{
    SyncEntry *e = (SyncEntry *)op;
    PyObject *previous;
    if (!entry_try_swap(e, value == e->state->SyncDeleted ? NULL : Py_NewRef(value), &previous)) {
        return Py_NewRef(e->state->SyncExpunged);
    }
    return entry_out(e, previous);
}

/* try_load_or_store(value): (actual, loaded), or EXPUNGED (Go's tryLoadOrStore). */
static PyObject *
entry_try_load_or_store(PyObject *op, PyObject *value)
{
    SyncEntry *e = (SyncEntry *)op;
    PyObject *expunged = e->state->SyncExpunged;
    for (;;) {
        PyObject *current = ftmap_ref_load(&e->p);
        if (current == expunged) {
            return current; /* the reference load took */
        }
        if (current != NULL) {
            PyObject *result = PyTuple_Pack(2, current, Py_True);
            Py_DECREF(current);
            return result;
        }
        if (ftmap_ref_cas(&e->p, NULL, Py_NewRef(value))) {
            return PyTuple_Pack(2, value, Py_False);
        }
        Py_DECREF(value); /* not stolen */
    }
}

/* compare_and_set(old, new): if the value is old (identity, then ==), set new (DELETED: delete).
 * As Go's CAS loop, with the comparison outside any lock (__eq__ may use this map): set only if the
 * slot still holds the very object compared (we hold a reference to it: no ABA). */
static PyObject *
entry_compare_and_set(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    SyncEntry *e = (SyncEntry *)op;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "compare_and_set(old, new) takes 2 arguments");
        return NULL;
    }
    PyObject *old = args[0];
    PyObject *new_value = args[1] == e->state->SyncDeleted ? NULL : args[1];
    PyObject *expunged = e->state->SyncExpunged;
    for (;;) {
        PyObject *current = ftmap_ref_load(&e->p);
        if (current == NULL) {
            Py_RETURN_FALSE;
        }
        if (current == expunged) {
            Py_DECREF(current);
            Py_RETURN_FALSE;
        }
        /* same_value(current, old): `current is old or bool(current == old)`, exactly what
         * PyObject_RichCompareBool computes. No lock is held: __eq__ may do anything. */
        int same = PyObject_RichCompareBool(current, old, Py_EQ);
        if (same <= 0) {
            Py_DECREF(current);
            if (same < 0) {
                return NULL;
            }
            Py_RETURN_FALSE;
        }
        if (ftmap_ref_cas(&e->p, current, Py_XNewRef(new_value))) {
            Py_DECREF(current); /* the slot's reference */
            Py_DECREF(current); /* ours */
            Py_RETURN_TRUE;
        }
        Py_XDECREF(new_value); /* not stolen */
        Py_DECREF(current);
    }
}

/* delete(): the previous value, or DELETED if there was none (nil or expunged stay as they are). */
static PyObject *
entry_delete(PyObject *op, PyObject *unused)
{
    (void)unused;
    SyncEntry *e = (SyncEntry *)op;
    PyObject *expunged = e->state->SyncExpunged;
    for (;;) {
        PyObject *old = entry_peek(e);
        if (old == NULL || old == expunged) {
            return Py_NewRef(e->state->SyncDeleted);
        }
        if (ftmap_ref_cas(&e->p, old, NULL)) {
            return old; /* the slot's reference */
        }
    }
}

/* try_expunge_locked(): with the map's mutex held, while the dirty map is built: nil -> expunged.
 * True if the entry is expunged now (Go's tryExpungeLocked). */
static PyObject *
entry_try_expunge_locked(PyObject *op, PyObject *unused)
{
    (void)unused;
    SyncEntry *e = (SyncEntry *)op;
    PyObject *expunged = e->state->SyncExpunged;
    for (;;) {
        PyObject *old = entry_peek(e);
        if (old != NULL) {
            return Py_NewRef(old == expunged ? Py_True : Py_False);
        }
        if (ftmap_ref_cas(&e->p, NULL, Py_NewRef(expunged))) {
            Py_RETURN_TRUE;
        }
        Py_DECREF(expunged); /* not stolen */
    }
}

/* unexpunge_locked(): with the map's mutex held: expunged -> nil. True if it was expunged. */
static PyObject *
entry_unexpunge_locked(PyObject *op, PyObject *unused)
{
    (void)unused;
    SyncEntry *e = (SyncEntry *)op;
    PyObject *expunged = e->state->SyncExpunged;
    if (ftmap_ref_cas(&e->p, expunged, NULL)) {
        Py_DECREF(expunged); /* the slot's reference; the module state holds another */
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static PyObject *
entry_get_key(PyObject *op, void *closure)
{
    (void)closure;
    PyObject *key = ((SyncEntry *)op)->key;
    return Py_NewRef(key != NULL ? key : Py_None); /* NULL only after tp_clear broke a cycle */
}

static PyObject *
entry_get_value(PyObject *op, void *closure)
{
    (void)closure;
    SyncEntry *e = (SyncEntry *)op;
    return entry_out(e, entry_value(e, e->state->SyncExpunged));
}

static PyObject *
entry_get_expunged(PyObject *op, void *closure)
{
    (void)closure;
    SyncEntry *e = (SyncEntry *)op;
    return Py_NewRef(entry_peek(e) == e->state->SyncExpunged ? Py_True : Py_False);
}

static PyMethodDef entry_methods[] = {
    {"try_swap", entry_try_swap_py, METH_O,
     "Store value unless expunged: the previous value (or DELETED); EXPUNGED if not stored."},
    {"try_load_or_store", entry_try_load_or_store, METH_O,
     "(actual, loaded), or EXPUNGED if the entry is expunged."},
    {"compare_and_set", _PyCFunction_CAST(entry_compare_and_set), METH_FASTCALL,
     "Set new (DELETED: delete) if the value is old (identity, then ==); False if absent or "
     "different."},
    {"delete", entry_delete, METH_NOARGS, "Delete the value; return it, or DELETED if none."},
    {"try_expunge_locked", entry_try_expunge_locked, METH_NOARGS,
     "Mutex held: deleted (nil) -> expunged; True if expunged now."},
    {"unexpunge_locked", entry_unexpunge_locked, METH_NOARGS,
     "Mutex held: expunged -> deleted (nil); True if it was expunged."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef entry_getset[] = {
    {"key", entry_get_key, NULL, "The key this entry is stored under.", NULL},
    {"value", entry_get_value, NULL, "The live value, or DELETED.", NULL},
    {"expunged", entry_get_expunged, NULL, "Whether the entry is expunged.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot entry_slots[] = {
    {Py_tp_new, entry_new},
    {Py_tp_dealloc, entry_dealloc},
    {Py_tp_traverse, entry_traverse},
    {Py_tp_clear, entry_clear},
    {Py_tp_methods, entry_methods},
    {Py_tp_getset, entry_getset},
    {Py_tp_doc, "_SyncEntry(key, value): one key's value slot in SyncMap's read and dirty maps."},
    {0, NULL},
};

static PyType_Spec entry_spec = {
    .name = "ftmap._core._SyncEntry",
    .basicsize = sizeof(SyncEntry),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = entry_slots,
};

/* -- _SyncRead: the published read map and its lookup table ------------------------------------
 *
 * What SyncMapBase.read publishes: the read tuple (m, amended) the Python code set, and, built
 * from m when it is published, ftmap's own immutable hash table of (hash, key, entry).
 *
 * Why a table of our own (issue 12): every public dict lookup on free-threaded 3.13
 * (PyDict_GetItemRef, and PyDict_GetItemWithError, which increfs and decrefs) takes a reference
 * to the value it finds, here the shared entry: two threads reading one key write one reference
 * count, and the handle's read path stopped scaling there (1.25-1.44x on 2 cores at 1,000 keys
 * with immortal values, against 1.9-2.1x for the other maps' handles). The table is immutable
 * and owns a reference to every key and entry in it, so a lookup returns BORROWED pointers,
 * valid while the caller holds the _SyncRead (the map's ftmap_ref_load reference, or a handle's
 * cache under its busy flag): a hit touches the entry's value slot and nothing else of the entry.
 *
 * Same results as the dict's lookup, with the same user calls: the probe key's hash is computed
 * once (PyObject_Hash, as the dict does); a stored key identical to it matches at once; one with
 * an equal hash is compared as the dict compares, PyObject_RichCompareBool(stored, key) (stored
 * key's __eq__ first, then the reflected one), and an exception from it propagates. The stored
 * hashes are the dict's own: the table is built only when every key's hash runs no user code
 * (hash_is_pure: str, int, float, complex, bytes, bool, None, frozenset, identity-hashed objects,
 * tuples of those), so hashing it again at publication calls nobody and returns what the dict
 * stored. And it is built only when no two stored keys have the same hash (-1 and -2 do; so do
 * k and k + 2**61 - 1): then a probe meets at most one stored key of its hash, exactly as in the
 * dict, whose order among several such keys depends on its history of deletions and could not
 * be reproduced. A read map with any other key (a key class with its own __hash__, an enum), two
 * keys of one hash, a value that is not an exact entry (only through the private _read, by
 * hand), more than 2**30 keys, or no memory for the table is published without one, and lookups
 * go to the dict as before (PyDict_GetItemRef: a new reference to the entry), identical results.
 * (A class whose __hash__ is reassigned while its instances are stored breaks the dict's own
 * lookups already; hash_is_pure reads tp_hash at publication and is not meant to survive it.)
 *
 * Layout: CPython's compact dict: `indices` (capacity = a power of two with at most 2/3 used,
 * int32 positions, -1 empty) and `slots` in the dict's iteration order; probing as dictobject.c
 * (i = i*5 + perturb + 1, perturb >>= 5), which spreads Python's identity-like int hashes.
 * Memory: 4 bytes a bucket (1.5-3 buckets a key) plus 24 bytes a key, besides the dict.
 */
typedef struct {
    Py_hash_t hash;
    PyObject *key;    /* a strong reference: the dict's key object */
    SyncEntry *entry; /* a strong reference */
} ReadSlot;

typedef struct {
    PyObject_HEAD
    PyObject *tuple;   /* (m, amended) exactly as the setter got it; fixed at construction; NULL
                        * only after tp_clear (then every lookup misses, as an empty map) */
    int amended;       /* fixed: tuple[1] is True */
    Py_ssize_t size;   /* fixed: slots in use; -1 when there is no table (lookups use m) */
    size_t mask;       /* fixed: buckets - 1 */
    int32_t *indices;  /* fixed: mask + 1 buckets, each -1 or a position in slots (PyMem) */
    ReadSlot *slots;   /* fixed: size slots (PyMem) */
} SyncRead;

#define READ_TABLE_MAX ((Py_ssize_t)1 << 30)
#define READ_PURE_DEPTH 8

/* Whether hashing key runs no user code (so its hash now is what the dict stored, and nothing
 * can run under the publishing mutex holder): only types whose tp_hash is CPython's own and
 * reads nothing but the object itself. */
static int
hash_is_pure(PyObject *key, int depth)
{
    PyTypeObject *t = Py_TYPE(key);
    if (t == &PyUnicode_Type || t == &PyLong_Type || t == &PyFloat_Type || t == &PyBytes_Type ||
        t == &PyBool_Type || t == &PyComplex_Type || t == &PyFrozenSet_Type || key == Py_None ||
        t->tp_hash == PyBaseObject_Type.tp_hash) {
        return 1;
    }
    if (t != &PyTuple_Type || depth >= READ_PURE_DEPTH) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(key); i++) {
        if (!hash_is_pure(PyTuple_GET_ITEM(key, i), depth + 1)) {
            return 0;
        }
    }
    return 1;
}

static void
read_table_free(SyncRead *r)
{
    ReadSlot *slots = r->slots;
    Py_ssize_t size = r->size;
    r->slots = NULL;
    r->size = -1;
    PyMem_Free(r->indices);
    r->indices = NULL;
    for (Py_ssize_t i = 0; i < size; i++) {
        Py_DECREF(slots[i].key);
        Py_DECREF((PyObject *)slots[i].entry);
    }
    PyMem_Free(slots);
}

/* Insert slot pos into the index; 0 if another stored key has the very same hash (then the
 * table is not used: see the comment above SyncRead). Two equal hashes probe the same bucket
 * sequence, so the second insertion passes the first key's bucket on its way. */
static int
read_table_insert(SyncRead *r, Py_ssize_t pos)
{
    Py_hash_t hash = r->slots[pos].hash;
    size_t perturb = (size_t)hash;
    size_t i = perturb & r->mask;
    while (r->indices[i] >= 0) {
        if (r->slots[r->indices[i]].hash == hash) {
            return 0;
        }
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & r->mask;
    }
    r->indices[i] = (int32_t)pos;
    return 1;
}

/* Build r's table from m (an exact dict nobody changes: the mutex holder's, being published).
 * Leaves r without a table (size -1) when a key's hash is not pure, two keys have one hash, a
 * value is not an exact entry, m is too large, or memory is short: never fails, never runs user
 * code. */
static void
read_table_build_lock_held(SyncRead *r, PyObject *m, PyTypeObject *entry_type)
{
    Py_ssize_t n = PyDict_GET_SIZE(m);
    if (n > READ_TABLE_MAX) {
        return;
    }
    size_t buckets = 8;
    while (buckets * 2 < (size_t)n * 3) {
        buckets *= 2;
    }
    r->indices = PyMem_Malloc(buckets * sizeof(int32_t));
    r->slots = PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof(ReadSlot));
    if (r->indices == NULL || r->slots == NULL) {
        r->size = 0;
        read_table_free(r);
        return;
    }
    memset(r->indices, 0xff, buckets * sizeof(int32_t)); /* every bucket -1: empty */
    r->mask = buckets - 1;
    r->size = 0;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (r->size < n && PyDict_Next(m, &pos, &key, &value)) {
        if (!Py_IS_TYPE(value, entry_type) || !hash_is_pure(key, 0)) {
            read_table_free(r);
            return;
        }
        Py_hash_t hash = PyObject_Hash(key); /* pure: cannot fail (no user code, no allocation
                                              * that reports errors for these types) */
        if (hash == -1) {
            PyErr_Clear();
            read_table_free(r);
            return;
        }
        ReadSlot *slot = &r->slots[r->size];
        slot->hash = hash;
        slot->key = Py_NewRef(key);
        slot->entry = (SyncEntry *)Py_NewRef(value);
        r->size++; /* owned by the table from here: read_table_free releases it */
        if (!read_table_insert(r, r->size - 1)) {
            read_table_free(r);
            return;
        }
    }
}

/* A new _SyncRead for the read tuple (m, amended), its shape already checked. */
static SyncRead *
read_new(ftmap_state *st, PyObject *tuple)
{
    PyTypeObject *type = (PyTypeObject *)st->SyncReadType;
    SyncRead *r = (SyncRead *)type->tp_alloc(type, 0);
    if (r == NULL) {
        return NULL;
    }
    r->tuple = Py_NewRef(tuple);
    r->amended = PyTuple_GET_ITEM(tuple, 1) == Py_True;
    r->size = -1;
    r->mask = 0;
    r->indices = NULL;
    r->slots = NULL;
    PyObject *m = PyTuple_GET_ITEM(tuple, 0);
    Py_BEGIN_CRITICAL_SECTION(m);
    read_table_build_lock_held(r, m, (PyTypeObject *)st->SyncEntryType);
    Py_END_CRITICAL_SECTION();
    return r;
}

/* The table's lookup: 1 and a BORROWED entry (valid while the caller holds r), 0 if absent, -1
 * with an exception (the key's __hash__ or an __eq__). r has a table (size >= 0). */
static int
read_table_lookup(SyncRead *r, PyObject *key, SyncEntry **entry)
{
    Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1) {
        return -1;
    }
    size_t perturb = (size_t)hash;
    size_t i = perturb & r->mask;
    for (;;) {
        int32_t ix = r->indices[i];
        if (ix < 0) {
            return 0;
        }
        ReadSlot *slot = &r->slots[ix];
        if (slot->key == key) {
            *entry = slot->entry;
            return 1;
        }
        if (slot->hash == hash) {
            /* r keeps slot->key alive through the user's __eq__ (r is immutable and held) */
            int eq = PyObject_RichCompareBool(slot->key, key, Py_EQ);
            if (eq < 0) {
                return -1;
            }
            if (eq > 0) {
                *entry = slot->entry;
                return 1;
            }
        }
        perturb >>= 5;
        i = (i * 5 + perturb + 1) & r->mask;
    }
}

static int
read_traverse(PyObject *op, visitproc visit, void *arg)
{
    SyncRead *r = (SyncRead *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(r->tuple);
    for (Py_ssize_t i = 0; i < r->size; i++) {
        Py_VISIT(r->slots[i].key);
        Py_VISIT((PyObject *)r->slots[i].entry);
    }
    return 0;
}

/* tp_clear runs only when no thread can reach r (or with the world stopped): no lookup is in
 * progress. Afterwards r reads as an empty map. */
static int
read_clear(PyObject *op)
{
    SyncRead *r = (SyncRead *)op;
    read_table_free(r);
    Py_CLEAR(r->tuple);
    return 0;
}

static void
read_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)read_clear(op);
    type->tp_free(op);
    Py_DECREF(type);
}

static PyType_Slot read_slots[] = {
    {Py_tp_dealloc, read_dealloc},
    {Py_tp_traverse, read_traverse},
    {Py_tp_clear, read_clear},
    {Py_tp_doc, "SyncMap's published read map: the read tuple and its immutable lookup table."},
    {0, NULL},
};

static PyType_Spec read_spec = {
    .name = "ftmap._core._SyncRead",
    .basicsize = sizeof(SyncRead),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = read_slots,
};

/* -- SyncMapBase ------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    ftmap_state *state; /* fixed at construction */
    ftmap_ref read;     /* published: a _SyncRead of an exact tuple (m, amended), m an exact dict
                         * never changed once published, amended True or False. Written by the
                         * holder of the subclass's mutex (_mu) through the _read setter, which
                         * builds the _SyncRead (ftmap_ref_exchange; the setter releases the old
                         * one: the Python code keeps its own reference to the old tuple until it
                         * releases the mutex, so no __del__ of its contents runs under it). Read
                         * by anyone, no lock, with ftmap_ref_load (or a handle's
                         * ftmap_ref_load_cached). Never NULL but after tp_clear. */
} SyncMapBase;

static PyObject *
syncmap_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    ftmap_state *st = ftmap_state_of_type(type);
    if (st == NULL) {
        return NULL;
    }
    PyObject *m = PyDict_New();
    if (m == NULL) {
        return NULL;
    }
    PyObject *tuple = PyTuple_Pack(2, m, Py_False);
    Py_DECREF(m);
    if (tuple == NULL) {
        return NULL;
    }
    SyncRead *read = read_new(st, tuple);
    Py_DECREF(tuple);
    if (read == NULL) {
        return NULL;
    }
    SyncMapBase *self = (SyncMapBase *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(read);
        return NULL;
    }
    self->state = st;
    ftmap_ref_init(&self->read, (PyObject *)read);
    return (PyObject *)self;
}

static int
syncmap_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    ftmap_ref_visit(&((SyncMapBase *)op)->read);
    return 0;
}

static int
syncmap_clear(PyObject *op)
{
    ftmap_ref_clear(&((SyncMapBase *)op)->read);
    return 0;
}

static void
syncmap_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)syncmap_clear(op);
    type->tp_free(op);
    Py_DECREF(type);
}

/* -- SyncMapHandleBase: the struct (its functions follow SyncMapBase's) ------------------------
 *
 * A handle caches the read map (_SyncRead) it loaded last (`cache`, a strong reference) and
 * revalidates it with ftmap_ref_load_cached: while the map still publishes that very _SyncRead, a
 * lookup touches no shared reference count for the read map (the map's own path increfs it, a
 * shared object, on every operation: ftmap_ref_load's CAS on its count, contended between
 * threads), and with a table none for the entry either: a read-map hit writes only the count of
 * the value it returns.
 *
 * The cache is mutable state of the handle, and a handle may be used from any thread (issue 12),
 * so it is guarded by `busy`, a try-lock that nobody ever waits on:
 *   - a lookup takes busy with a CAS 0 -> 1 (seq_cst, so acquire); if it finds busy taken (another
 *     thread is using the handle right now, or this thread re-entered it from a key's __hash__ /
 *     __eq__ / a __del__ run by the lookup), it goes the map's way (read_acquire: ftmap_ref_load,
 *     a reference of its own) and never touches the cache;
 *   - with busy held, ftmap_ref_load_cached returns a BORROWED reference valid while the cache
 *     holds it; only the busy holder writes the cache, so it stays valid until the holder
 *     releases busy (a release store of 0, read_release), after the operation is done with the
 *     read map and with the entry it borrowed from the table (the value it took from the entry
 *     is a new reference, usable after the release; so is an entry found without a table).
 * Why this is memory-safe: the _SyncRead the lookup reads, and through it the table's keys and
 * entries, is kept alive by the cache's reference,
 * which only the busy holder can drop (ftmap_ref_load_cached, on the holder's own thread): no
 * other thread can free it meanwhile. Code run by the holder's own thread while it holds busy
 * (a key's __hash__/__eq__ in the lookup, or the __del__ of an old read map's contents when
 * ftmap_ref_load_cached releases it) can re-enter the handle, but then finds busy taken and takes
 * the map's way: it never writes the cache. busy is not a lock anyone waits on, so running user
 * code while holding it cannot deadlock. tp_clear/dealloc touch the cache only when no thread can
 * reach the handle.
 * Why it is linearizable: ftmap_ref_load_cached returns the cached _SyncRead only if the map's
 * slot holds it at its acquire load (ftmap_ref_is: the cache's reference keeps its address from
 * being reused, so equal addresses mean the same object, ftmap_ref.h claim (c)); otherwise it
 * loads the current one with ftmap_ref_load. Either way it was the published read map at that
 * load, exactly what the map's own ftmap_ref_load gives its operation; the rest of the operation
 * is the map's code on it. So a handle's operation is the map's operation, linearized at the
 * same point.
 */
typedef struct {
    PyObject_HEAD
    ftmap_state *state; /* fixed at construction */
    SyncMapBase *map;   /* fixed at construction: a strong reference, never cleared before
                         * dealloc (tp_clear leaves it: any cycle through it also runs through the
                         * map, whose own tp_clear breaks it), so it is never NULL */
    PyObject *cache;    /* a strong reference to the _SyncRead this handle loaded last, or NULL.
                         * Read and written only by the thread holding `busy` (through
                         * ftmap_ref_load_cached), or by tp_clear/dealloc when no thread can reach
                         * the handle */
    uintptr_t busy;     /* 0 free, 1 taken. Taken by a CAS 0 -> 1 (any thread), released by a
                         * release store of 0 by its taker; never waited for */
} SyncHandle;

/* The read map one operation reads: the map's own reference (ftmap_ref_load), or, through a
 * handle h whose busy flag this thread takes, h's cache (a borrowed reference, valid until
 * read_release: only the busy holder replaces the cache). *held is h when busy was taken, else
 * NULL (then the returned reference is the caller's). NULL only after the map's tp_clear. */
static inline SyncRead *
read_acquire(SyncMapBase *self, SyncHandle *h, SyncHandle **held)
{
    if (h != NULL) {
        uintptr_t expected = 0;
        if (ftmap_atomic_cas_uintptr(&h->busy, &expected, 1)) {
            *held = h;
            return (SyncRead *)ftmap_ref_load_cached(&self->read, &h->cache);
        }
        /* in use (another thread, or this one re-entered): the map's way */
    }
    *held = NULL;
    return (SyncRead *)ftmap_ref_load(&self->read);
}

/* End of the operation's use of read and of every borrowed entry found in it. */
static inline void
read_release(SyncRead *read, SyncHandle *held)
{
    if (held != NULL) {
        ftmap_atomic_store_uintptr_release(&held->busy, 0);
    }
    else {
        Py_XDECREF(read); /* may free it and what only it held: no lock is held */
    }
}

/* The lookup in a held read map, no lock: 1 and the entry in *entry, 0 if absent, -1 with an
 * exception (the key's __hash__ or __eq__). With a table, *entry is BORROWED (valid until
 * read_release) and *owned is 0; without one (read->size < 0), the dict's lookup gives a new
 * reference and *owned is 1. A cleared or missing read map reads as empty. */
static inline int
read_find(ftmap_state *st, SyncRead *read, PyObject *key, SyncEntry **entry, int *owned)
{
    *owned = 0;
    if (read == NULL || read->tuple == NULL) {
        return 0;
    }
    if (read->size >= 0) {
        return read_table_lookup(read, key, entry);
    }
    PyObject *found_entry;
    int found = PyDict_GetItemRef(PyTuple_GET_ITEM(read->tuple, 0), key, &found_entry);
    /* The read map's values are entries whenever ftmap published it; one pointer compare keeps
     * a read map assigned by hand through the private `_read` from being read as entries. */
    if (found == 1 && !Py_IS_TYPE(found_entry, (PyTypeObject *)st->SyncEntryType)) {
        Py_DECREF(found_entry);
        PyErr_SetString(PyExc_TypeError, "SyncMap's read map holds a value that is not an entry");
        return -1;
    }
    *entry = (SyncEntry *)found_entry;
    *owned = found == 1;
    return found;
}

static inline int
read_amended(SyncRead *read)
{
    return read != NULL && read->amended;
}

/* The value of a key the read map lacks while amended: calls the subclass's _value_slow (which
 * takes the mutex, counts a miss, may promote; or, re-entered, reads without it). A new
 * reference to the value, or NULL: *error says whether an exception is set. */
static PyObject *
value_slow(SyncMapBase *self, PyObject *key, const char *operation, int *error)
{
    PyObject *v = PyObject_CallMethod((PyObject *)self, "_value_slow", "Os", key, operation);
    if (v == NULL) {
        *error = 1;
        return NULL;
    }
    *error = 0;
    if (v == self->state->SyncDeleted) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
}

/* The value for key: a new reference, or NULL with *error 0 (absent) or 1 (an exception). */
static inline PyObject *
syncmap_lookup(SyncMapBase *self, SyncHandle *h, PyObject *key, const char *operation, int *error)
{
    SyncHandle *held;
    SyncRead *read = read_acquire(self, h, &held);
    SyncEntry *entry;
    int owned;
    int found = read_find(self->state, read, key, &entry, &owned);
    int amended = read_amended(read);
    PyObject *v = NULL;
    if (found > 0) {
        v = entry_value(entry, self->state->SyncExpunged);
        if (owned) {
            Py_DECREF(entry);
        }
    }
    read_release(read, held);
    *error = found < 0;
    if (found != 0 || !amended) {
        return v;
    }
    return value_slow(self, key, operation, error);
}

static void
set_key_error(PyObject *key)
{
    PyObject *args = PyTuple_Pack(1, key);
    if (args != NULL) {
        PyErr_SetObject(PyExc_KeyError, args);
        Py_DECREF(args);
    }
}

static PyObject *
syncmap_subscript(PyObject *op, PyObject *key)
{
    int error;
    PyObject *v = syncmap_lookup((SyncMapBase *)op, NULL, key, "[]", &error);
    if (v == NULL && !error) {
        set_key_error(key);
    }
    return v;
}

static int
syncmap_contains(PyObject *op, PyObject *key)
{
    int error;
    PyObject *v = syncmap_lookup((SyncMapBase *)op, NULL, key, "in", &error);
    if (v == NULL) {
        return error ? -1 : 0;
    }
    Py_DECREF(v);
    return 1;
}

/* A call with keywords or the wrong number of arguments (cold): bind the arguments with the
 * subclass's Python binder for that method (`_bind_load` ...), which has the pure method's
 * signature and name, so that keywords work and every error message is the pure map's. Returns
 * the bound arguments as a tuple of exactly n items, or NULL with the binder's TypeError. */
static PyObject *
bind_args(PyObject *self, const char *binder, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames, Py_ssize_t n)
{
    PyObject *fn = PyObject_GetAttrString(self, binder);
    if (fn == NULL) {
        return NULL;
    }
    PyObject *bound = PyObject_Vectorcall(fn, args, (size_t)nargs, kwnames);
    Py_DECREF(fn);
    if (bound != NULL && (!PyTuple_CheckExact(bound) || PyTuple_GET_SIZE(bound) != n)) {
        Py_DECREF(bound);
        PyErr_Format(PyExc_SystemError, "%s must return a tuple of %zd arguments", binder, n);
        return NULL;
    }
    return bound;
}

static PyObject *
syncmap_get_impl(SyncMapBase *self, SyncHandle *h, PyObject *key, PyObject *default_value)
{
    int error;
    PyObject *v = syncmap_lookup(self, h, key, "get", &error);
    if (v == NULL && !error) {
        return Py_NewRef(default_value);
    }
    return v;
}

static PyObject *
syncmap_get(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && (nargs == 1 || nargs == 2)) {
        return syncmap_get_impl((SyncMapBase *)op, NULL, args[0], nargs == 2 ? args[1] : Py_None);
    }
    PyObject *bound = bind_args(op, "_bind_get", args, nargs, kwnames, 2);
    if (bound == NULL) {
        return NULL;
    }
    PyObject *r = syncmap_get_impl((SyncMapBase *)op, NULL, PyTuple_GET_ITEM(bound, 0), PyTuple_GET_ITEM(bound, 1));
    Py_DECREF(bound);
    return r;
}

static PyObject *
syncmap_load_impl(SyncMapBase *self, SyncHandle *h, PyObject *key)
{
    int error;
    PyObject *v = syncmap_lookup(self, h, key, "load", &error);
    if (v == NULL) {
        return error ? NULL : PyTuple_Pack(2, Py_None, Py_False);
    }
    PyObject *result = PyTuple_Pack(2, v, Py_True);
    Py_DECREF(v);
    return result;
}

static PyObject *
syncmap_load(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && nargs == 1) {
        return syncmap_load_impl((SyncMapBase *)op, NULL, args[0]);
    }
    PyObject *bound = bind_args(op, "_bind_load", args, nargs, kwnames, 1);
    if (bound == NULL) {
        return NULL;
    }
    PyObject *r = syncmap_load_impl((SyncMapBase *)op, NULL, PyTuple_GET_ITEM(bound, 0));
    Py_DECREF(bound);
    return r;
}

/* store: the lock-free fast path (the key in the read map, not expunged: Go's trySwap), else the
 * subclass's _swap_slow(key, value, "store") under the mutex. The replaced value is released
 * here, with no lock held. */
static int
syncmap_store_impl(SyncMapBase *self, SyncHandle *h, PyObject *key, PyObject *value)
{
    SyncHandle *held;
    SyncRead *read = read_acquire(self, h, &held);
    SyncEntry *entry;
    int owned;
    int found = read_find(self->state, read, key, &entry, &owned);
    int swapped = 0;
    PyObject *previous = NULL;
    if (found > 0) {
        swapped = entry_try_swap(entry, Py_NewRef(value), &previous);
        if (owned) {
            Py_DECREF(entry);
        }
    }
    read_release(read, held);
    if (found < 0) {
        return -1;
    }
    if (swapped) {
        Py_XDECREF(previous); /* the replaced value: its __del__ runs with nothing held */
        return 0;
    }
    PyObject *r = PyObject_CallMethod((PyObject *)self, "_swap_slow", "OOs", key, value, "store");
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static PyObject *
syncmap_store(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    int rc;
    if (kwnames == NULL && nargs == 2) {
        rc = syncmap_store_impl((SyncMapBase *)op, NULL, args[0], args[1]);
    }
    else {
        PyObject *bound = bind_args(op, "_bind_store", args, nargs, kwnames, 2);
        if (bound == NULL) {
            return NULL;
        }
        rc = syncmap_store_impl((SyncMapBase *)op, NULL, PyTuple_GET_ITEM(bound, 0), PyTuple_GET_ITEM(bound, 1));
        Py_DECREF(bound);
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
syncmap_ass_subscript(PyObject *op, PyObject *key, PyObject *value)
{
    if (value != NULL) {
        return syncmap_store_impl((SyncMapBase *)op, NULL, key, value);
    }
    /* del m[k]: `if not self.load_and_delete(key)[1]: raise KeyError(key)` */
    PyObject *r = PyObject_CallMethod(op, "load_and_delete", "(O)", key);
    if (r == NULL) {
        return -1;
    }
    int loaded = PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2 ? PyObject_IsTrue(PyTuple_GET_ITEM(r, 1))
                                                              : 1;
    Py_DECREF(r);
    if (loaded < 0) {
        return -1;
    }
    if (!loaded) {
        set_key_error(key);
        return -1;
    }
    return 0;
}

static PyObject *
syncmap_get_read(PyObject *op, void *closure)
{
    (void)closure;
    SyncRead *read = (SyncRead *)ftmap_ref_load(&((SyncMapBase *)op)->read);
    PyObject *tuple = read == NULL ? NULL : Py_XNewRef(read->tuple);
    Py_XDECREF(read);
    return tuple == NULL ? PyTuple_Pack(2, Py_None, Py_False) : tuple;
}

static int
syncmap_set_read(PyObject *op, PyObject *value, void *closure)
{
    (void)closure;
    SyncMapBase *self = (SyncMapBase *)op;
    if (value == NULL || !PyTuple_CheckExact(value) || PyTuple_GET_SIZE(value) != 2 ||
        !PyDict_CheckExact(PyTuple_GET_ITEM(value, 0)) || !PyBool_Check(PyTuple_GET_ITEM(value, 1))) {
        PyErr_SetString(PyExc_TypeError, "_read must be a tuple (dict, bool)");
        return -1;
    }
    SyncRead *read = read_new(self->state, value); /* runs no user code */
    if (read == NULL) {
        return -1;
    }
    /* The old one's release cannot free its tuple while the caller (the mutex holder) keeps its
     * own reference (every caller in _sync_c.py does, until after it releases the mutex); the
     * keys and entries it releases are the tuple's dict's too. */
    Py_XDECREF(ftmap_ref_exchange(&self->read, (PyObject *)read));
    return 0;
}

/* For tests and the README's claims: how many keys the published read map's C table holds, or
 * None when lookups go to the dict (no table: see _SyncRead). */
static PyObject *
syncmap_get_read_table_size(PyObject *op, void *closure)
{
    (void)closure;
    SyncRead *read = (SyncRead *)ftmap_ref_load(&((SyncMapBase *)op)->read);
    PyObject *size = read == NULL || read->size < 0 ? Py_NewRef(Py_None)
                                                    : PyLong_FromSsize_t(read->size);
    Py_XDECREF(read);
    return size;
}

static PyMethodDef syncmap_methods[] = {
    {"load", _PyCFunction_CAST(syncmap_load), METH_FASTCALL | METH_KEYWORDS,
     "The value for key and True, or (None, False) if absent."},
    {"get", _PyCFunction_CAST(syncmap_get), METH_FASTCALL | METH_KEYWORDS,
     "The value for key, or default (None) if absent."},
    {"store", _PyCFunction_CAST(syncmap_store), METH_FASTCALL | METH_KEYWORDS,
     "Set the value for key."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef syncmap_getset[] = {
    {"_read", syncmap_get_read, syncmap_set_read,
     "The published read map: (dict of entries, amended). Replaced only with the mutex held.", NULL},
    {"_read_table_size", syncmap_get_read_table_size, NULL,
     "Keys in the read map's C lookup table, or None when lookups go to the dict.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot syncmap_slots[] = {
    {Py_tp_new, syncmap_new},
    {Py_tp_dealloc, syncmap_dealloc},
    {Py_tp_traverse, syncmap_traverse},
    {Py_tp_clear, syncmap_clear},
    {Py_tp_methods, syncmap_methods},
    {Py_tp_getset, syncmap_getset},
    {Py_mp_subscript, syncmap_subscript},
    {Py_mp_ass_subscript, syncmap_ass_subscript},
    {Py_sq_contains, syncmap_contains},
    {Py_tp_doc, "SyncMap's C base: the read map and the lock-free hot paths (ftmap._sync_c.SyncMap "
                "is the public class)."},
    {0, NULL},
};

static PyType_Spec syncmap_spec = {
    .name = "ftmap._core.SyncMapBase",
    .basicsize = sizeof(SyncMapBase),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = syncmap_slots,
};

/* -- SyncMapHandleBase: the functions (the struct and the busy protocol: above) ---------------- */

static PyObject *
handle_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *map;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "SyncMapHandle() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "SyncMapHandle", 1, 1, &map)) {
        return NULL;
    }
    ftmap_state *st = ftmap_state_of_type(type);
    if (st == NULL) {
        return NULL;
    }
    if (!PyObject_TypeCheck(map, (PyTypeObject *)st->SyncMapBaseType)) {
        PyErr_Format(PyExc_TypeError, "SyncMapHandle needs a C SyncMap, not %.200s",
                     Py_TYPE(map)->tp_name);
        return NULL;
    }
    SyncHandle *self = (SyncHandle *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->state = st;
    self->map = (SyncMapBase *)Py_NewRef(map);
    self->cache = NULL; /* the first lookup loads it, on the thread that uses the handle */
    self->busy = 0;
    return (PyObject *)self;
}

static int
handle_traverse(PyObject *op, visitproc visit, void *arg)
{
    SyncHandle *self = (SyncHandle *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->map);
    Py_VISIT(self->cache);
    return 0;
}

static int
handle_clear(PyObject *op)
{
    Py_CLEAR(((SyncHandle *)op)->cache); /* the map stays (see the struct) */
    return 0;
}

static void
handle_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)handle_clear(op);
    Py_CLEAR(((SyncHandle *)op)->map);
    type->tp_free(op);
    Py_DECREF(type);
}

static PyObject *
handle_subscript(PyObject *op, PyObject *key)
{
    SyncHandle *h = (SyncHandle *)op;
    int error;
    PyObject *v = syncmap_lookup(h->map, h, key, "[]", &error);
    if (v == NULL && !error) {
        set_key_error(key);
    }
    return v;
}

static int
handle_contains(PyObject *op, PyObject *key)
{
    SyncHandle *h = (SyncHandle *)op;
    int error;
    PyObject *v = syncmap_lookup(h->map, h, key, "in", &error);
    if (v == NULL) {
        return error ? -1 : 0;
    }
    Py_DECREF(v);
    return 1;
}

static PyObject *
handle_get(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    SyncHandle *h = (SyncHandle *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && (nargs == 1 || nargs == 2)) {
        return syncmap_get_impl(h->map, h, args[0], nargs == 2 ? args[1] : Py_None);
    }
    PyObject *bound = bind_args(op, "_bind_get", args, nargs, kwnames, 2);
    if (bound == NULL) {
        return NULL;
    }
    PyObject *r = syncmap_get_impl(h->map, h, PyTuple_GET_ITEM(bound, 0), PyTuple_GET_ITEM(bound, 1));
    Py_DECREF(bound);
    return r;
}

static PyObject *
handle_load(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    SyncHandle *h = (SyncHandle *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && nargs == 1) {
        return syncmap_load_impl(h->map, h, args[0]);
    }
    PyObject *bound = bind_args(op, "_bind_load", args, nargs, kwnames, 1);
    if (bound == NULL) {
        return NULL;
    }
    PyObject *r = syncmap_load_impl(h->map, h, PyTuple_GET_ITEM(bound, 0));
    Py_DECREF(bound);
    return r;
}

static PyObject *
handle_store(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    SyncHandle *h = (SyncHandle *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    int rc;
    if (kwnames == NULL && nargs == 2) {
        rc = syncmap_store_impl(h->map, h, args[0], args[1]);
    }
    else {
        PyObject *bound = bind_args(op, "_bind_store", args, nargs, kwnames, 2);
        if (bound == NULL) {
            return NULL;
        }
        rc = syncmap_store_impl(h->map, h, PyTuple_GET_ITEM(bound, 0), PyTuple_GET_ITEM(bound, 1));
        Py_DECREF(bound);
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
handle_ass_subscript(PyObject *op, PyObject *key, PyObject *value)
{
    SyncHandle *h = (SyncHandle *)op;
    if (value != NULL) {
        return syncmap_store_impl(h->map, h, key, value);
    }
    /* del h[k]: the handle's (the subclass's) load_and_delete, as the map's del does */
    PyObject *r = PyObject_CallMethod(op, "load_and_delete", "(O)", key);
    if (r == NULL) {
        return -1;
    }
    int loaded = PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2 ? PyObject_IsTrue(PyTuple_GET_ITEM(r, 1))
                                                              : 1;
    Py_DECREF(r);
    if (loaded < 0) {
        return -1;
    }
    if (!loaded) {
        set_key_error(key);
        return -1;
    }
    return 0;
}

static PyObject *
handle_get_map(PyObject *op, void *closure)
{
    (void)closure;
    return Py_NewRef((PyObject *)((SyncHandle *)op)->map);
}

static PyMethodDef handle_methods[] = {
    {"load", _PyCFunction_CAST(handle_load), METH_FASTCALL | METH_KEYWORDS,
     "The value for key and True, or (None, False) if absent."},
    {"get", _PyCFunction_CAST(handle_get), METH_FASTCALL | METH_KEYWORDS,
     "The value for key, or default (None) if absent."},
    {"store", _PyCFunction_CAST(handle_store), METH_FASTCALL | METH_KEYWORDS,
     "Set the value for key."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef handle_getset[] = {
    {"map", handle_get_map, NULL, "The map this handle works on.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot handle_slots[] = {
    {Py_tp_new, handle_new},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_methods, handle_methods},
    {Py_tp_getset, handle_getset},
    {Py_mp_subscript, handle_subscript},
    {Py_mp_ass_subscript, handle_ass_subscript},
    {Py_sq_contains, handle_contains},
    {Py_tp_doc, "SyncMapHandle's C base: a per-thread cache of the map's read map and the hot "
                "paths through it (ftmap._sync_c.SyncMapHandle is the public class)."},
    {0, NULL},
};

static PyType_Spec handle_spec = {
    .name = "ftmap._core.SyncMapHandleBase",
    .basicsize = sizeof(SyncHandle),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = handle_slots,
};

/* Marker objects: "deleted" (what the entries' Python methods return for no value) and
 * "expunged" (what an expunged slot holds, and what try_swap / try_load_or_store return). */
static PyObject *
make_marker(const char *name)
{
    PyObject *cls = NULL;
    PyObject *module = PyImport_ImportModule("ftmap._markers");
    if (module == NULL) {
        return NULL;
    }
    cls = PyObject_GetAttrString(module, "_Marker");
    Py_DECREF(module);
    if (cls == NULL) {
        return NULL;
    }
    PyObject *marker = PyObject_CallFunction(cls, "s", name);
    Py_DECREF(cls);
    return marker;
}

int
ftmap_syncmap_exec(PyObject *module, ftmap_state *st)
{
    st->SyncDeleted = make_marker("deleted");
    if (st->SyncDeleted == NULL || PyModule_AddObjectRef(module, "_SYNC_DELETED", st->SyncDeleted) < 0) {
        return -1;
    }
    st->SyncExpunged = make_marker("expunged");
    if (st->SyncExpunged == NULL ||
        PyModule_AddObjectRef(module, "_SYNC_EXPUNGED", st->SyncExpunged) < 0) {
        return -1;
    }
    st->SyncEntryType = PyType_FromModuleAndSpec(module, &entry_spec, NULL);
    if (st->SyncEntryType == NULL ||
        PyModule_AddObjectRef(module, "_SyncEntry", st->SyncEntryType) < 0) {
        return -1;
    }
    st->SyncReadType = PyType_FromModuleAndSpec(module, &read_spec, NULL);
    if (st->SyncReadType == NULL || PyModule_AddObjectRef(module, "_SyncRead", st->SyncReadType) < 0) {
        return -1;
    }
    st->SyncMapBaseType = PyType_FromModuleAndSpec(module, &syncmap_spec, NULL);
    if (st->SyncMapBaseType == NULL ||
        PyModule_AddObjectRef(module, "SyncMapBase", st->SyncMapBaseType) < 0) {
        return -1;
    }
    st->SyncMapHandleBaseType = PyType_FromModuleAndSpec(module, &handle_spec, NULL);
    if (st->SyncMapHandleBaseType == NULL ||
        PyModule_AddObjectRef(module, "SyncMapHandleBase", st->SyncMapHandleBaseType) < 0) {
        return -1;
    }
    return 0;
}
