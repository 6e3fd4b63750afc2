/* ftmap_ref.h: a published reference that writers replace and readers load without a lock.
 *
 * SnapshotMap's current snapshot, SyncMap's read map and its entries' values, a handle's view of
 * its map: each is one PyObject * that some threads replace (dropping the reference the slot held
 * to the old object, which may free it) while other threads load it with no lock and need a strong
 * reference to what they loaded.
 *
 * The naive reader
 *
 *     PyObject *v = slot;        // (1)
 *     Py_INCREF(v);              // (2)
 *
 * is a use after free: between (1) and (2) a writer can store a new object and Py_DECREF the old
 * one to zero; (2) then writes into freed memory (maybe another object's reference count by now),
 * and the reader returns an object of whatever type now lives there. tests/stress/
 * test_core_ref_stress.py builds exactly that naive reader (compiled in for tests only) and
 * catches it; the same test passes with the functions below.
 *
 * API (all static inline; `r` is an ftmap_ref field of a shared object):
 *
 *   ftmap_ref_init(r, obj)             before r is shared: r holds obj (stolen; NULL = empty)
 *   ftmap_ref_load(r)                  any thread, no lock: a new reference to the current
 *                                      object, or NULL if empty (no exception set). Lock-free.
 *   ftmap_ref_exchange(r, obj)         writer: r holds obj (stolen); returns the reference r held
 *                                      to the old object, which the caller must Py_XDECREF after
 *                                      releasing every lock it holds (__del__ may run).
 *   ftmap_ref_publish(r, obj)          writer holding no lock: exchange, then release the old.
 *   ftmap_ref_cas(r, expected, obj)    writer: if r holds `expected` (compared by address, may be
 *                                      NULL), r holds obj (stolen) and returns 1: the reference r
 *                                      held to `expected` now belongs to the caller (Py_XDECREF it
 *                                      after unlocking). Else returns 0 and obj is not stolen.
 *   ftmap_ref_is(r, obj)               does r hold obj now? Meaningful when the caller holds a
 *                                      strong reference to obj (then its address cannot be reused:
 *                                      no ABA). Never dereference what r holds without a reference.
 *   ftmap_ref_load_cached(r, &cache)   for per-thread handles: returns a BORROWED reference valid
 *                                      while *cache holds it. If r still holds *cache, touches no
 *                                      reference count at all (one acquire load); otherwise loads
 *                                      the new object into *cache and releases the old one (may
 *                                      run __del__: call it with no lock held). NULL if r is empty.
 *   ftmap_ref_borrow_lock_held(r)      a BORROWED reference for a thread that holds the lock which
 *                                      serialises every writer of r (so nobody can replace it).
 *   ftmap_ref_visit / ftmap_ref_clear  for tp_traverse / tp_clear and tp_dealloc.
 *
 * Writers of one ftmap_ref need not be serialised with each other (exchange and cas are atomic
 * read-modify-writes), but most designs do serialise them with a PyMutex for their own reasons.
 *
 * ----------------------------------------------------------------------------------------------
 * Why ftmap_ref_load is safe (free-threaded build)
 *
 * The protocol is the one CPython 3.13 and 3.14 themselves use for lock-free reads of dict and
 * list items and of type->tp_mro (Objects/dictobject.c, listobject.c, typeobject.c:
 * _Py_TryIncrefCompare / _Py_XGetRef in Include/internal/pycore_object.h, and PyMember_GetOne for
 * Py_T_OBJECT_EX members), rebuilt from public API:
 *
 *   publish:  EnableTryIncRef(new); old = atomic_exchange(r, new); Py_XDECREF(old) later
 *   load:     loop { v = atomic_load(r); if v == NULL: return NULL
 *                    if TryIncRef(v):                 // increments only a live object
 *                        if atomic_load(r) == v: return v
 *                        Py_DECREF(v)                 // replaced meanwhile: retry
 *                  }
 *
 * TryIncRef(v) is PyUnstable_TryIncRef on 3.14+ (public, documented) and, on 3.13, the same code
 * written against the reference-count fields that 3.13's public Include/object.h exposes (as
 * pythoncapi-compat and nanobind do): succeed at once if v is immortal or owned by this thread
 * (a plain increment of ob_ref_local, see (b)); else compare-and-swap ob_ref_shared from s to
 * s + 1 unit, refusing when s == 0 or s == _Py_REF_MERGED. EnableTryIncRef is
 * PyUnstable_EnableTryIncRef on 3.14+ and, on 3.13, _PyObject_SetMaybeWeakref's CAS that sets the
 * _Py_REF_MAYBE_WEAKREF flag in ob_ref_shared.
 *
 * Claims, for a reader R that returns v:
 *
 * (a) R's memory accesses to *v are to memory that still holds an object header. R touches only
 *     v's ob_tid, ob_ref_local and ob_ref_shared, and only while attached to the interpreter
 *     without passing a quiescent state (no Python code runs, the thread state is not detached).
 *     Free-threaded CPython allocates objects from mimalloc heaps that use QSBR (Python/pystate.c:
 *     page_use_qsbr for the object and GC heaps): a page emptied by frees is not reused for another
 *     size class or returned to the OS until every attached thread has passed a quiescent state.
 *     A freed block may be reused at once for another object of the same heap and size class; the
 *     allocator keeps ob_tid and the reference-count fields of freed blocks meaningful (the debug
 *     fill starts at ob_type for this reason), and a dead object's ob_ref_shared is 0 or
 *     _Py_REF_MERGED. This is CPython's own assumption for dict and list items, and it covers any
 *     object CPython allocates (user values included); it does not cover an object that an
 *     extension allocates outside the object allocator, exactly as for dict values.
 *
 * (b) The increment is never applied to a dead object. An object whose ob_ref_shared is 0 may be
 *     freed by its owner without any atomic operation on ob_ref_shared (Py_DECREF's fast path), so
 *     TryIncRef refuses 0; it refuses _Py_REF_MERGED (merged, count zero: being deallocated). For
 *     any other value the owner's final decrement must go through _Py_MergeZeroLocalRefcount or
 *     _Py_DecRefShared, which decide death by a CAS on ob_ref_shared; R's successful CAS orders
 *     before theirs, so they observe R's unit and the object stays alive. If the block was freed
 *     and reused, the CAS lands on the new, live object at that address: a legitimate incref of a
 *     live object, undone below.
 *     The owner fast path: ob_tid == this thread's id means this thread owns v. An object owned
 *     by R is freed only by R itself: directly when its local count reaches zero, or when R
 *     merges it at a safepoint after other threads' decrements (biased reference counting queues
 *     it to R). Neither can happen while R is inside ftmap_ref_load, so v is alive and the plain
 *     local increment is R's own field. A dead block's ob_tid is 0 (merged) or holds the
 *     allocator's free-list link, never a thread id.
 *
 * (c) The object R returns is the one r held. After its CAS, R loads r again (seq_cst, after the
 *     seq_cst CAS). If r == v, then the object R incremented was at address v at the time of the
 *     CAS and, since R holds a reference to it, still is: addresses of live objects are unique, so
 *     r holds that very object, and R owns a reference to it. (ABA cannot fool this: whatever came
 *     and went at that address in between, the object R holds is the one r holds now.) If r != v,
 *     R drops its reference (a real one, to a live object) and retries.
 *
 * (d) Progress. The slot's current object is kept alive by the slot's own reference, and the
 *     writer set _Py_REF_MAYBE_WEAKREF on it before publishing it (release, by the exchange), so
 *     its ob_ref_shared is never 0 while it is published: a load of an unchanged slot succeeds. A
 *     retry therefore happens only when a writer replaced r meanwhile: the load is lock-free
 *     (never blocks, starves only under an unbounded stream of writes to the same slot).
 *     EnableTryIncRef's cost: the owner's final decref of that object takes the merge path (one
 *     CAS) instead of freeing directly. Immortal objects (None, small ints, static sentinels)
 *     need nothing: TryIncRef succeeds on them at once.
 *
 * (e) Writers never free early. ftmap_ref_exchange returns the slot's reference to the old object;
 *     the caller drops it whenever it likes: (b) and (c) hold however soon that is. Nothing is
 *     deferred, so there is no reclamation scheme, no per-thread registration and no memory held
 *     back beyond what CPython's QSBR already does.
 *
 * On the default (GIL) build the GIL serialises everything: load is Py_XNewRef of a plain read,
 * with no window in which a writer can run (nothing between the read and the incref releases the
 * GIL).
 *
 * Cost (benchmarks/core_ref.py, 3.13.5t, 2 cores; see docs/c-core.md for the table): one load is
 * a plain load plus one CAS on the object's shared count plus one reload, the same cache line
 * traffic as the Py_INCREF it replaces. Readers that must not touch a shared reference count at
 * all (issue 12's handles) use ftmap_ref_load_cached.
 *
 * Alternatives considered (docs/c-core.md has the longer version):
 *   - PyMember_GetOne(Py_T_OBJECT_EX): public in both versions and the same protocol inside, but
 *     3.13 offers no public way to set the MAYBE_WEAKREF flag, so every load of an object owned by
 *     the writer thread and not yet shared falls back to a critical section on the container, and
 *     it only works for slots that are members of a PyObject.
 *   - A critical section (or PyMutex) around load+incref: public and simple, but two extra atomic
 *     read-modify-writes on one shared mutex per load, serialising readers.
 *   - Hazard pointers or an epoch scheme: per-thread registration and a fence per load, plus
 *     deferred frees, to re-implement what QSBR already gives every CPython object.
 * ---------------------------------------------------------------------------------------------*/
#ifndef FTMAP_REF_H
#define FTMAP_REF_H

#include "ftmap_core.h"

typedef struct {
    PyObject *_obj; /* only through the functions below: never read or write it directly */
} ftmap_ref;

#if FTMAP_FREE_THREADED

#  if PY_VERSION_HEX >= 0x030E00A5
/* 3.14+ (added in 3.14.0a5): the public (unstable-tier) API, documented in
 * Doc/c-api/object.rst. */
static inline int
ftmap_try_incref(PyObject *op)
{
    return PyUnstable_TryIncRef(op);
}

static inline void
ftmap_enable_try_incref(PyObject *op)
{
    PyUnstable_EnableTryIncRef(op);
}
#  else
/* 3.13: the bodies of 3.14's PyUnstable_TryIncRef (= _Py_TryIncrefFast || _Py_TryIncRefShared)
 * and PyUnstable_EnableTryIncRef (= _PyObject_SetMaybeWeakref), against the fields and constants
 * of 3.13's public Include/object.h. 3.13's layout is frozen for all its patch releases. */
static inline int
ftmap_try_incref(PyObject *op)
{
    uint32_t local = _Py_atomic_load_uint32_relaxed(&op->ob_ref_local);
    local += 1;
    if (local == 0) {
        return 1; /* immortal */
    }
    if (_Py_IsOwnedByCurrentThread(op)) {
        _Py_atomic_store_uint32_relaxed(&op->ob_ref_local, local);
#    ifdef Py_REF_DEBUG
        _Py_INCREF_IncRefTotal();
#    endif
        return 1;
    }
    Py_ssize_t shared = _Py_atomic_load_ssize_relaxed(&op->ob_ref_shared);
    for (;;) {
        /* 0: the owner may free it without touching ob_ref_shared; MERGED: count zero, dying. */
        if (shared == 0 || shared == _Py_REF_MERGED) {
            return 0;
        }
        if (_Py_atomic_compare_exchange_ssize(&op->ob_ref_shared, &shared,
                                              shared + (1 << _Py_REF_SHARED_SHIFT))) {
#    ifdef Py_REF_DEBUG
            _Py_INCREF_IncRefTotal();
#    endif
            return 1;
        }
    }
}

static inline void
ftmap_enable_try_incref(PyObject *op)
{
    if (_Py_IsImmortal(op)) {
        return;
    }
    for (;;) {
        Py_ssize_t shared = _Py_atomic_load_ssize_relaxed(&op->ob_ref_shared);
        if ((shared & _Py_REF_SHARED_FLAG_MASK) != 0) {
            return; /* already MAYBE_WEAKREF, QUEUED or MERGED */
        }
        if (_Py_atomic_compare_exchange_ssize(&op->ob_ref_shared, &shared,
                                              shared | _Py_REF_MAYBE_WEAKREF)) {
            return;
        }
    }
}
#  endif

static inline PyObject *
ftmap_ref_load(ftmap_ref *r)
{
    for (;;) {
        PyObject *v = (PyObject *)ftmap_atomic_load_ptr_acquire(&r->_obj);
        if (v == NULL) {
            return NULL;
        }
        if (ftmap_try_incref(v)) {
            /* seq_cst: ordered after the CAS in ftmap_try_incref (claim (c)). */
            if ((PyObject *)ftmap_atomic_load_ptr(&r->_obj) == v) {
                return v;
            }
            Py_DECREF(v);
        }
    }
}

static inline void
ftmap_ref_prepare(PyObject *obj)
{
    if (obj != NULL) {
        ftmap_enable_try_incref(obj);
    }
}

#else /* the default (GIL) build */

static inline PyObject *
ftmap_ref_load(ftmap_ref *r)
{
    return Py_XNewRef(r->_obj);
}

static inline void
ftmap_ref_prepare(PyObject *obj)
{
    (void)obj;
}

#endif

static inline void
ftmap_ref_init(ftmap_ref *r, PyObject *obj)
{
    ftmap_ref_prepare(obj);
    ftmap_atomic_store_ptr_release(&r->_obj, obj);
}

static inline PyObject *
ftmap_ref_exchange(ftmap_ref *r, PyObject *obj)
{
    ftmap_ref_prepare(obj); /* claim (d): flagged before any reader can see it */
    return (PyObject *)ftmap_atomic_exchange_ptr(&r->_obj, obj);
}

static inline void
ftmap_ref_publish(ftmap_ref *r, PyObject *obj)
{
    Py_XDECREF(ftmap_ref_exchange(r, obj));
}

static inline int
ftmap_ref_cas(ftmap_ref *r, PyObject *expected, PyObject *obj)
{
    ftmap_ref_prepare(obj);
    void *want = expected;
    return ftmap_atomic_cas_ptr(&r->_obj, &want, obj);
}

static inline int
ftmap_ref_is(ftmap_ref *r, PyObject *obj)
{
    return (PyObject *)ftmap_atomic_load_ptr_acquire(&r->_obj) == obj;
}

static inline PyObject *
ftmap_ref_load_cached(ftmap_ref *r, PyObject **cache)
{
    PyObject *current = *cache;
    if (current != NULL && ftmap_ref_is(r, current)) {
        return current;
    }
    PyObject *fresh = ftmap_ref_load(r);
    *cache = fresh;
    Py_XDECREF(current);
    return fresh;
}

static inline PyObject *
ftmap_ref_borrow_lock_held(ftmap_ref *r)
{
    return (PyObject *)ftmap_atomic_load_ptr_relaxed(&r->_obj);
}

/* tp_traverse runs with the world stopped (free-threaded GC) or under the GIL: a plain read. */
#define ftmap_ref_visit(r)                                                                         \
    do {                                                                                           \
        PyObject *_ftmap_visit_obj = ftmap_atomic_load_ptr_relaxed(&(r)->_obj);                    \
        Py_VISIT(_ftmap_visit_obj);                                                                \
    } while (0)

/* tp_clear / tp_dealloc: no other thread can reach the owner any more (or GC stopped them). */
static inline void
ftmap_ref_clear(ftmap_ref *r)
{
    Py_XDECREF(ftmap_atomic_exchange_ptr(&r->_obj, NULL));
}

#endif /* FTMAP_REF_H */
