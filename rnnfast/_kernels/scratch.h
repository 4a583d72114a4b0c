/* Scratch memory of the passes, kept by each thread from one call to the next.
 *
 * A pass needs scratch besides its outputs (the step matrix, da, a zero state, ...). Allocated
 * and freed at every call, a buffer above glibc's mmap threshold is returned to the operating
 * system each time and faulted back in, page by page, on the next call; a small one still costs
 * malloc and free. So each thread keeps its scratch buffers in slots, grown when a call needs
 * more, up to RNNFAST_SCRATCH_KEEP_BYTES in all: a larger request gets memory of its own, freed
 * by the release at the end of that call. The slots belong to the calling thread (a pthread
 * key, whose destructor frees them when the thread ends), so calls from several threads never
 * share them, and a call that finds its thread's slots busy (a call made from inside another:
 * a finaliser run by the garbage collector, say) uses memory of its own too.
 *
 * Every buffer is reported to tracemalloc (in a domain of its own), as NumPy reports its arrays,
 * so that memory measurements see it.
 *
 * Usage: rnnfast_scratch_begin(&s); p = rnnfast_scratch_get(&s, slot, bytes) for each slot;
 * ... ; rnnfast_scratch_end(&s). A NULL from rnnfast_scratch_get means out of memory.
 * Without pthreads (Windows builds), every call allocates and frees its own.
 */
#ifndef RNNFAST_SCRATCH_H
#define RNNFAST_SCRATCH_H

#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(_WIN32)
#include <malloc.h>
#endif

/* tracemalloc's domain for these buffers ("rnnf"). */
#define RNNFAST_TRACE_DOMAIN 0x726e6e66u

/* Buffers start on a cache line (64 bytes): the kernels' vector loads of a row that starts
 * there span no two lines (malloc's 16-byte alignment made every other one do). */
#define RNNFAST_SCRATCH_ALIGN 64

static inline void* rnnfast_traced_malloc(size_t bytes) {
    void* memory = NULL;
#if defined(_WIN32)
    memory = _aligned_malloc(bytes, RNNFAST_SCRATCH_ALIGN);
#else
    if (posix_memalign(&memory, RNNFAST_SCRATCH_ALIGN, bytes) != 0) memory = NULL;
#endif
    if (memory != NULL) PyTraceMalloc_Track(RNNFAST_TRACE_DOMAIN, (uintptr_t)memory, bytes);
    return memory;
}

static inline void rnnfast_traced_free(void* memory) {
    if (memory == NULL) return;
    PyTraceMalloc_Untrack(RNNFAST_TRACE_DOMAIN, (uintptr_t)memory);
#if defined(_WIN32)
    _aligned_free(memory);
#else
    free(memory);
#endif
}

#define RNNFAST_SCRATCH_SLOTS 7
#define RNNFAST_SCRATCH_KEEP_BYTES ((size_t)8 << 20)

typedef struct {
    void* memory[RNNFAST_SCRATCH_SLOTS];
    size_t bytes[RNNFAST_SCRATCH_SLOTS];
    int busy;
} rnnfast_slots;

typedef struct {
    rnnfast_slots* kept;  /* this thread's slots, or NULL: memory of the call's own */
    void* own[RNNFAST_SCRATCH_SLOTS];  /* memory of the call's own, freed at the end */
} rnnfast_scratch;

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define RNNFAST_SCRATCH_KEPT 1

static pthread_key_t rnnfast_scratch_key;
static pthread_once_t rnnfast_scratch_once = PTHREAD_ONCE_INIT;
static int rnnfast_scratch_key_made = 0;

/* At the end of a thread, which may no longer call into Python: plain free (a trace that
 * tracemalloc may still hold for these buffers is only a record). */
static void rnnfast_scratch_free_slots(void* pointer) {
    rnnfast_slots* slots = (rnnfast_slots*)pointer;
    for (int i = 0; i < RNNFAST_SCRATCH_SLOTS; i++) free(slots->memory[i]);
    free(slots);
}

static void rnnfast_scratch_make_key(void) {
    rnnfast_scratch_key_made = pthread_key_create(&rnnfast_scratch_key,
                                                  rnnfast_scratch_free_slots) == 0;
}

static rnnfast_slots* rnnfast_thread_slots(void) {
    pthread_once(&rnnfast_scratch_once, rnnfast_scratch_make_key);
    if (!rnnfast_scratch_key_made) return NULL;
    rnnfast_slots* slots = (rnnfast_slots*)pthread_getspecific(rnnfast_scratch_key);
    if (slots == NULL) {
        slots = (rnnfast_slots*)calloc(1, sizeof *slots);
        if (slots != NULL && pthread_setspecific(rnnfast_scratch_key, slots) != 0) {
            free(slots);
            slots = NULL;
        }
    }
    return slots;
}
#else
static rnnfast_slots* rnnfast_thread_slots(void) { return NULL; }
#endif

static inline void rnnfast_scratch_begin(rnnfast_scratch* s) {
    memset(s, 0, sizeof *s);
    rnnfast_slots* slots = rnnfast_thread_slots();
    if (slots != NULL && !slots->busy) {
        slots->busy = 1;
        s->kept = slots;
    }
}

/* bytes of scratch for slot (0 .. RNNFAST_SCRATCH_SLOTS - 1), uninitialised; NULL if out of
 * memory. Each slot is asked for once per call. */
static inline void* rnnfast_scratch_get(rnnfast_scratch* s, int slot, size_t bytes) {
    if (bytes == 0) bytes = 1;
    rnnfast_slots* kept = s->kept;
    if (kept != NULL) {
        if (kept->bytes[slot] >= bytes) return kept->memory[slot];
        size_t total = bytes;
        for (int i = 0; i < RNNFAST_SCRATCH_SLOTS; i++)
            if (i != slot) total += kept->bytes[i];
        if (total <= RNNFAST_SCRATCH_KEEP_BYTES) {
            rnnfast_traced_free(kept->memory[slot]);
            kept->memory[slot] = rnnfast_traced_malloc(bytes);
            kept->bytes[slot] = kept->memory[slot] != NULL ? bytes : 0;
            return kept->memory[slot];
        }
    }
    s->own[slot] = rnnfast_traced_malloc(bytes);
    return s->own[slot];
}

static inline void rnnfast_scratch_end(rnnfast_scratch* s) {
    for (int i = 0; i < RNNFAST_SCRATCH_SLOTS; i++) rnnfast_traced_free(s->own[i]);
    if (s->kept != NULL) s->kept->busy = 0;
    memset(s, 0, sizeof *s);
}

/* Frees the calling thread's kept scratch (unless a call of its own is using it). */
static inline void rnnfast_scratch_release_thread(void) {
    rnnfast_slots* slots = rnnfast_thread_slots();
    if (slots == NULL || slots->busy) return;
    for (int i = 0; i < RNNFAST_SCRATCH_SLOTS; i++) {
        rnnfast_traced_free(slots->memory[i]);
        slots->memory[i] = NULL;
        slots->bytes[i] = 0;
    }
}

/* The bytes the calling thread keeps. */
static inline size_t rnnfast_scratch_kept_bytes(void) {
    rnnfast_slots* slots = rnnfast_thread_slots();
    size_t total = 0;
    if (slots != NULL)
        for (int i = 0; i < RNNFAST_SCRATCH_SLOTS; i++) total += slots->bytes[i];
    return total;
}

#endif
