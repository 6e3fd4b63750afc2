/* ftmap_core.h: what every C file of ftmap._core shares.
 *
 * Read docs/c-core.md first. In short:
 *
 * - One module, ftmap._core, multi-phase init, Py_mod_gil = Py_MOD_GIL_NOT_USED, per-interpreter
 *   state (ftmap_state below). Every type is a heap type created from a PyType_Spec in the module's
 *   exec slot and kept in the state; there is no static mutable state anywhere.
 * - A C file that defines types adds one line to FTMAP_PARTS (its exec function) and one line per
 *   object it keeps to FTMAP_STATE_OBJECTS. module.c does the rest (exec order, traverse, clear).
 * - Shared references that writers replace while readers load them without a lock go through
 *   ftmap_ref.h, never through a plain load followed by Py_INCREF.
 * - Atomics: CPython's own _Py_atomic_* (Include/cpython/pyatomic.h), through the ftmap_atomic_*
 *   names below. Locks: PyMutex (Include/cpython/lock.h) or critical sections. Both are public in
 *   3.13 and 3.14.
 *
 * Struct fields carry their invariant beside them, as Go's src/sync/map.go does:
 *
 *     PyMutex mu;           // guards dirty and misses
 *     PyObject *dirty;      // written under mu; read under mu
 *     ftmap_ref read;       // published: written under mu by ftmap_ref_exchange, read by anyone
 *                           //   with ftmap_ref_load (no lock)
 *     Py_ssize_t misses;    // written under mu; read under mu
 *     uint64_t version;     // written under mu with ftmap_atomic_store_u64 (release); read by
 *                           //   anyone with ftmap_atomic_load_u64 (acquire)
 *
 * "who writes, under what lock or protocol; who reads, under what lock or protocol". A field that is
 * set in tp_new/tp_init before the object is shared and never changed says "fixed at construction".
 */
#ifndef FTMAP_CORE_H
#define FTMAP_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#if PY_VERSION_HEX < 0x030D0000
#  error "ftmap._core needs CPython 3.13 or newer (setup.py builds it only there)"
#endif

/* ---------------------------------------------------------------------------------------------
 * Atomics.
 *
 * Acceptable: CPython's _Py_atomic_* from Include/cpython/pyatomic.h, which Python.h includes in
 * every 3.13+ build (free-threaded and default). They are what CPython's own objects use, they
 * compile on every compiler CPython supports (GCC/Clang builtins, MSVC intrinsics; C11
 * <stdatomic.h> is not available on every MSVC CPython supports), ThreadSanitizer understands
 * them, and they operate on plain fields, so a struct looks the same in both builds.
 * Not acceptable: volatile, hand-written inline asm, or plain loads/stores of a field that another
 * thread writes concurrently (a data race: undefined behaviour, and a TSan report).
 *
 * Names are re-exported with an ftmap_ prefix so that a later switch (for example to C11 atomics)
 * is one edit here. Use the memory order the protocol needs and say why in a comment; default to
 * acquire loads / release stores for publication and plain seq_cst for read-modify-write.
 * On the default (GIL) build these are still real atomics: cheap, and the code stays one code.
 * ------------------------------------------------------------------------------------------- */
#define ftmap_atomic_load_ptr_acquire(p)        _Py_atomic_load_ptr_acquire(p)
#define ftmap_atomic_load_ptr_relaxed(p)        _Py_atomic_load_ptr_relaxed(p)
#define ftmap_atomic_load_ptr(p)                _Py_atomic_load_ptr(p)
#define ftmap_atomic_store_ptr_release(p, v)    _Py_atomic_store_ptr_release((p), (v))
#define ftmap_atomic_store_ptr_relaxed(p, v)    _Py_atomic_store_ptr_relaxed((p), (v))
#define ftmap_atomic_exchange_ptr(p, v)         _Py_atomic_exchange_ptr((p), (v))
#define ftmap_atomic_cas_ptr(p, expected_p, v)  _Py_atomic_compare_exchange_ptr((p), (expected_p), (v))
#define ftmap_atomic_load_ssize_relaxed(p)      _Py_atomic_load_ssize_relaxed(p)
#define ftmap_atomic_load_ssize_acquire(p)      _Py_atomic_load_ssize_acquire(p)
#define ftmap_atomic_store_ssize_relaxed(p, v)  _Py_atomic_store_ssize_relaxed((p), (v))
#define ftmap_atomic_store_ssize_release(p, v)  _Py_atomic_store_ssize_release((p), (v))
#define ftmap_atomic_add_ssize(p, v)            _Py_atomic_add_ssize((p), (v))
#define ftmap_atomic_cas_ssize(p, expected_p, v) _Py_atomic_compare_exchange_ssize((p), (expected_p), (v))
#define ftmap_atomic_load_u64_acquire(p)        _Py_atomic_load_uint64_acquire(p)
#define ftmap_atomic_load_u64_relaxed(p)        _Py_atomic_load_uint64_relaxed(p)
#define ftmap_atomic_store_u64_release(p, v)    _Py_atomic_store_uint64_release((p), (v))
#define ftmap_atomic_store_u64_relaxed(p, v)    _Py_atomic_store_uint64_relaxed((p), (v))
#define ftmap_atomic_add_u64(p, v)              _Py_atomic_add_uint64((p), (v))
#define ftmap_atomic_load_uintptr_relaxed(p)    _Py_atomic_load_uintptr_relaxed(p)
#define ftmap_atomic_load_uintptr_acquire(p)    _Py_atomic_load_uintptr_acquire(p)
#define ftmap_atomic_store_uintptr_release(p, v) _Py_atomic_store_uintptr_release((p), (v))
#define ftmap_atomic_cas_uintptr(p, expected_p, v) _Py_atomic_compare_exchange_uintptr((p), (expected_p), (v))
#define ftmap_atomic_load_int_relaxed(p)        _Py_atomic_load_int_relaxed(p)
#define ftmap_atomic_store_int_relaxed(p, v)    _Py_atomic_store_int_relaxed((p), (v))

/* ---------------------------------------------------------------------------------------------
 * Locks.
 *
 * PyMutex (one byte, zero-initialised, public since 3.13): PyMutex_Lock / PyMutex_Unlock. It
 * detaches the thread state while it blocks, so a thread waiting for it never stalls a
 * stop-the-world GC. Rules, from issue 11:
 *   - Never hold a PyMutex while calling anything that can run Python code: PyObject_Hash,
 *     PyObject_RichCompare (user __eq__), Py_DECREF (user __del__, weakref callbacks), calling a
 *     user callback, PyErr_WarnEx, attribute lookups on user objects. Compute hashes before
 *     locking; collect references to release in locals and Py_DECREF them after unlocking
 *     (ftmap_ref_exchange returns the old reference for exactly this reason).
 *   - A dict operation on a dict that may hold user keys can call __eq__: under a PyMutex use
 *     only lookups by identity-hash-safe keys, or prove in a comment why no user code runs, or use
 *     a critical section instead.
 *   - Name functions that expect a lock held ..._lock_held (CPython's convention) and assert it
 *     where cheap.
 * Py_BEGIN_CRITICAL_SECTION(obj) (public since 3.13; a no-op on the default build) locks obj's
 * own per-object mutex and is released automatically if the thread blocks or calls code that
 * takes another critical section, so it cannot deadlock with user code; it is the right tool when
 * user code must run while the structure is protected (CPython's dict does this).
 * ------------------------------------------------------------------------------------------- */
#ifdef Py_GIL_DISABLED
#  define FTMAP_FREE_THREADED 1
#else
#  define FTMAP_FREE_THREADED 0
#endif

/* ---------------------------------------------------------------------------------------------
 * Module state: one per interpreter (per imported module object).
 *
 * Every field is a strong reference set once in the exec slot, before the module is visible to
 * any other code, and released only by m_clear/m_free: any thread may read it without a lock.
 *
 * Python classes that the C code raises or returns live in Python (src/ftmap/_errors.py,
 * src/ftmap/_markers.py) and are imported here at exec time. That cannot cycle: ftmap/__init__.py
 * imports ftmap._impl, which imports this module; its exec then imports ftmap._errors and
 * ftmap._markers, submodules of the (partly initialised) ftmap package that import nothing from
 * ftmap themselves. Importing ftmap._core first runs ftmap/__init__.py first, which is the same
 * path. tests/unit/test_core_module.py imports them in every order. A new state object imported
 * from Python must come from a module with the same property (or be looked up lazily).
 *
 * To add an object: one X(name) line below, then set st->name in your part's exec function.
 * Types are stored as PyObject * (cast with (PyTypeObject *) where needed) so that traverse and
 * clear stay generic.
 * ------------------------------------------------------------------------------------------- */
#define FTMAP_STATE_OBJECTS(X)                                                                     \
    /* from ftmap._errors */                                                                       \
    X(ConcurrentMapError)                                                                          \
    X(ConcurrentWriteError)                                                                        \
    X(ConcurrentReadWriteError)                                                                    \
    X(ConcurrentIterationError)                                                                    \
    X(RecursiveUpdateError)                                                                        \
    X(ThreadInfo)                                                                                  \
    /* from ftmap._markers */                                                                      \
    X(MISSING)                                                                                     \
    X(DELETE)                                                                                      \
    /* published_ref.c: the test type for ftmap_ref */                                             \
    X(PublishedRefType)                                                                            \
    X(PayloadType)                                                                                 \
    /* the map types: one line each, added by the per-map C files */                               \
    X(SyncMapBaseType) X(SyncEntryType) X(SyncDeleted) X(SyncExpunged) X(SyncReadType)            \
    X(UnsafeMapBaseType) X(UnsafeMapIteratorType)                                                  \
    X(ShardedMapBaseType)                                                                          \
    X(SnapshotMapType) X(SnapshotReaderType)                                                       \
    X(snapshot_str_version) X(snapshot_str_next) X(snapshot_str__tail)                            \
    /* the per-thread handles (issue 12): one line each, set by the map's C file */               \
    X(UnsafeMapHandleBaseType)                                                                     \
    X(SyncMapHandleBaseType)                                                                       \
    X(ShardedMapHandleBaseType)                                                                    \
    X(SnapshotMapHandleBaseType)

typedef struct {
#define FTMAP_STATE_FIELD(name) PyObject *name;
    FTMAP_STATE_OBJECTS(FTMAP_STATE_FIELD)
#undef FTMAP_STATE_FIELD
} ftmap_state;

/* Every C file with an exec function adds one X(name) here; module.c calls
 * ftmap_<name>_exec(module, state) in this order. An exec function creates its types with
 * PyType_FromModuleAndSpec(module, &spec, NULL), stores them in the state, adds them to the
 * module (PyModule_AddObjectRef) and returns 0, or sets an exception and returns -1. */
#define FTMAP_PARTS(X)                                                                             \
    X(fnv)                                                                                         \
    X(published_ref)                                                                               \
    X(syncmap)                                                                                     \
    X(unsafemap)                                                                                   \
    X(shardedmap)                                                                                  \
    X(snapshotmap)

#define FTMAP_DECLARE_EXEC(name) int ftmap_##name##_exec(PyObject *module, ftmap_state *st);
FTMAP_PARTS(FTMAP_DECLARE_EXEC)
#undef FTMAP_DECLARE_EXEC

/* The module definition, for PyType_GetModuleByDef. */
extern PyModuleDef ftmap_core_module;

static inline ftmap_state *
ftmap_state_of_module(PyObject *module)
{
    return (ftmap_state *)PyModule_GetState(module);
}

/* The state for an instance of one of our types (or of a Python subclass of one): cold paths.
 * Hot paths keep the pointer in the instance instead (set in tp_new from the type), because
 * PyType_GetModuleByDef walks the MRO. The pointer stays valid as long as the instance lives:
 * the instance holds its type, a heap type holds its module, the module owns the state. */
static inline ftmap_state *
ftmap_state_of_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &ftmap_core_module);
    return module == NULL ? NULL : ftmap_state_of_module(module);
}

/* Raise exc_class(*args) built from a Py_BuildValue format: for the ftmap._errors classes,
 * whose constructors compute their messages (ftmap_raise(st->RecursiveUpdateError, "(sss)",
 * "SyncMap", "set", "compute")). Always returns NULL, for `return ftmap_raise(...)`. */
PyObject *ftmap_raise(PyObject *exc_class, const char *format, ...);

/* (ftmap._impl.rebuild, (name, args[, kwargs])) for __reduce__: pickles that load as whichever
 * implementation the unpickling process selected (docs/c-core.md, "pickles"). Steals args and
 * kwargs (kwargs may be NULL). Returns a new reference, or NULL with an exception set. */
PyObject *ftmap_reduce(const char *name, PyObject *args, PyObject *kwargs);

#endif /* FTMAP_CORE_H */
