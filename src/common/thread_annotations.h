// Clang's thread-safety annotations (-Wthread-safety), after LevelDB's
// port/thread_annotations.h. They state lock rules in the code, where the
// compiler checks them: a field GUARDED_BY(mu_) read without mu_ held, or a
// function that REQUIRES(mu_) called without it, fails the clang build that
// scripts/test.sh runs with -Werror. Under GCC they expand to nothing.
#pragma once

#if defined(__clang__)
#define UFFD_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define UFFD_THREAD_ANNOTATION(x)
#endif

// On a class: it is a lock (a "capability").
#define CAPABILITY(name) UFFD_THREAD_ANNOTATION(capability(name))
// On a class: an RAII holder of a lock.
#define SCOPED_CAPABILITY UFFD_THREAD_ANNOTATION(scoped_lockable)

// On a field: read or written only with the lock held.
#define GUARDED_BY(mu) UFFD_THREAD_ANNOTATION(guarded_by(mu))
// On a pointer field: what it points to is guarded.
#define PT_GUARDED_BY(mu) UFFD_THREAD_ANNOTATION(pt_guarded_by(mu))
// On a lock field: the order in which locks are taken.
#define ACQUIRED_BEFORE(...) UFFD_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) UFFD_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))

// On a function: the caller holds the lock (and still does on return).
#define REQUIRES(...) UFFD_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
// On a function: the caller must NOT hold the lock (the function takes it).
#define EXCLUDES(...) UFFD_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
// On a function: it takes, or lets go of, the lock.
#define ACQUIRE(...) UFFD_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) UFFD_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) UFFD_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
// On a function: asserts (to the analysis) that the lock is held.
#define ASSERT_CAPABILITY(x) UFFD_THREAD_ANNOTATION(assert_capability(x))
// On a function returning a lock: which one.
#define RETURN_CAPABILITY(x) UFFD_THREAD_ANNOTATION(lock_returned(x))

// Opts one function out of the analysis; say why next to it.
#define NO_THREAD_SAFETY_ANALYSIS UFFD_THREAD_ANNOTATION(no_thread_safety_analysis)
