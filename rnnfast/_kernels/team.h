/* A team of threads for the time loops, kept alive between passes, that cannot collapse.
 *
 * A threaded pass is a sequence of steps, each a set of independent tasks (column blocks of the
 * step) that must all be done before the next step starts. rnnfast_team_run runs them with the
 * calling thread and up to n_threads - 1 workers:
 *
 * - Tasks are claimed, not assigned: whoever is free takes the next task of the step (one
 *   compare-and-swap on a word holding the step and the task). A worker that has lost its core
 *   (to another library's spinning pool, another process) claims nothing, and the caller does
 *   the step alone: no step ever waits for a thread that is not running, except for a task that
 *   thread had already claimed.
 * - Whether the team pays is measured, not assumed: each kind of step (its size, direction and
 *   dtype; the caller says) keeps two estimates of a step's time, on the team and on the caller
 *   alone, across passes. The caller tries each way a few times, then runs every step the
 *   faster way (the team only when it is at least 3% faster) and the other way once in a
 *   while, to notice a change (another library's pool waking up, a process that has ended):
 *   after 64 steps, then twice as far each time the retry confirms the choice, up to 4096.
 *   Where the team does not pay, its steps cost at most a sixty-fourth of the difference, and
 *   soon much less. A team step that had to wake the workers first (the first of a pass of
 *   several steps, the first after steps alone) times their wake-up, not the team, and is no
 *   sample.
 * - One wait is measured on its own: when the caller waits for a claimed task much longer than
 *   a task takes, a worker was descheduled in it. If the last such wait was recent (within 64
 *   times this one's length), the cores are contended and the caller runs the next steps
 *   alone, for a time that doubles at each such wait (from 64 ms to 1 s) and halves after a
 *   clean spell eight times as long; probing costs at most one such wait per period, a small
 *   share of it. A rare one (a preemption now and then, as on a shared virtual machine) costs
 *   at most 1/64 of the time between them, less than the team saves there.
 * - Nobody burns a core another needs: a worker spins for at most RNNFAST_TEAM_SPIN_NS on a step
 *   that does not come (between passes, while the caller runs alone), then sleeps on a futex;
 *   the caller, waiting for a claimed task, spins a little and then yields its core. Workers
 *   sleep between passes, so they never hold a core another library's threads need.
 *
 * Each task is computed the same way whoever computes it, so results do not depend on the
 * thread count. One pass uses the team at a time: a pass that finds it busy (a call from another
 * Python thread) runs on its own thread. After fork() the child starts a team of its own.
 * Without Linux futexes, every pass runs on the calling thread.
 */
#ifndef RNNFAST_TEAM_H
#define RNNFAST_TEAM_H

/* syscall() (for the futex) is declared under _DEFAULT_SOURCE; Python.h, included first in the
 * extensions, defines _GNU_SOURCE, which implies it. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE) && !defined(_GNU_SOURCE)
#define _DEFAULT_SOURCE
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Runs task `task` of step `step` (both from 0); and a whole step, all its tasks in one go (the
 * same results, in the way one thread runs fastest). */
typedef void (*rnnfast_task_fn)(void* context, ptrdiff_t step, ptrdiff_t task);
typedef void (*rnnfast_step_fn)(void* context, ptrdiff_t step);

#if defined(__linux__) && !defined(__STDC_NO_ATOMICS__)
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RNNFAST_PAUSE() _mm_pause()
#else
#define RNNFAST_PAUSE() ((void)0)
#endif

#define RNNFAST_TEAM_MAX_WORKERS 63
/* How long a worker spins for a step before it sleeps, and the caller for a claimed task
 * before it yields its core between looks. */
#define RNNFAST_TEAM_SPIN_NS 20000
#define RNNFAST_TEAM_CALLER_SPIN_NS 2000
/* A wait for a claimed task longer than this plus a few tasks' time means a descheduled
 * worker; the caller then runs alone for a penalty of PENALTY_MIN .. PENALTY_MAX. */
#define RNNFAST_TEAM_LATE_NS 20000
#define RNNFAST_TEAM_PENALTY_MIN_NS 64000000
#define RNNFAST_TEAM_PENALTY_MAX_NS 1024000000
/* ... but only when it follows the last one within this many times its wait. */
#define RNNFAST_TEAM_SPORADIC 64
/* The choice between the team and the caller alone, per kind of step (see rnnfast_team_run). */
#define RNNFAST_TEAM_KINDS 512
#define RNNFAST_TEAM_TRIALS 4
#define RNNFAST_TEAM_MIN_GAIN_PERCENT 97
#define RNNFAST_TEAM_RETRY_EVERY 64
#define RNNFAST_TEAM_RETRY_MAX 4096
#define RNNFAST_TEAM_ADAPT 0
#define RNNFAST_TEAM_ALWAYS 1
#define RNNFAST_TEAM_NEVER 2
/* The ticket between passes: no task index is this large, so nothing can be claimed. */
#define RNNFAST_TEAM_CLOSED ((uint64_t)0xffffffffu)

typedef struct {
    int64_t alone_ns, team_ns;  /* estimates of a step's time */
    int32_t alone_samples, team_samples;
    int32_t since_retry, retry_every;
    int last_choice;
    int retrying;  /* the step being run is a retry of the way not chosen */
    int retry_again;  /* the last retry was no sample: take it again at the next step */
} rnnfast_step_record;

typedef struct {
    /* The work: (step << 32) | next unclaimed task of that step, for the tasks of the step
     * the caller last published; claims compare-and-swap it. */
    _Atomic uint64_t ticket;
    char pad0[64 - sizeof(uint64_t)];
    _Atomic int64_t done;       /* tasks finished in this pass (every step's) */
    char pad1[64 - sizeof(int64_t)];
    _Atomic uint32_t published; /* futex word: changes at every published step */
    _Atomic int sleepers;       /* workers asleep on it */
    _Atomic int stop;
    int participants;           /* workers that may claim in this pass */
    int64_t n_tasks;            /* per step, this pass */
    rnnfast_task_fn fn;
    void* context;
    /* The team itself. */
    int n_workers;
    pthread_t workers[RNNFAST_TEAM_MAX_WORKERS];
    pthread_mutex_t busy;
    /* The caller's adaptation (read and written under busy). */
    int64_t alone_until_ns;
    int64_t penalty_ns;
    int64_t last_late_ns;
    int64_t late_waits;         /* passes' long waits so far (tests, diagnostics) */
    int64_t tasks_by_workers;   /* tasks the workers ran so far */
    int mode;                   /* RNNFAST_TEAM_ADAPT, _ALWAYS (every step on the team) or
                                 * _NEVER (every step alone): tests take both ways for sure */
    rnnfast_step_record records[RNNFAST_TEAM_KINDS];
} rnnfast_team_t;

static rnnfast_team_t rnnfast_team = {.ticket = RNNFAST_TEAM_CLOSED,
                                      .busy = PTHREAD_MUTEX_INITIALIZER};
static pthread_once_t rnnfast_team_atfork_once = PTHREAD_ONCE_INIT;

static inline int64_t rnnfast_now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static inline void rnnfast_futex_wait(_Atomic uint32_t* word, uint32_t seen) {
    syscall(SYS_futex, (uint32_t*)word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
}

static inline void rnnfast_futex_wake_all(_Atomic uint32_t* word) {
    syscall(SYS_futex, (uint32_t*)word, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

/* Claims a task of the published step: 1 with *step and *task set, or 0 if none is left. */
static inline int rnnfast_team_claim(rnnfast_team_t* team, ptrdiff_t* step, ptrdiff_t* task) {
    uint64_t ticket = atomic_load_explicit(&team->ticket, memory_order_acquire);
    for (;;) {
        int64_t next = (int64_t)(ticket & RNNFAST_TEAM_CLOSED);
        if (next >= team->n_tasks) return 0;
        if (atomic_compare_exchange_weak_explicit(&team->ticket, &ticket, ticket + 1,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            *step = (ptrdiff_t)(ticket >> 32);
            *task = (ptrdiff_t)next;
            return 1;
        }
    }
}

static void* rnnfast_team_worker(void* argument) {
    rnnfast_team_t* team = &rnnfast_team;
    int index = (int)(intptr_t)argument;
    uint32_t seen = atomic_load(&team->published);
    for (;;) {
        /* Wait for a step: spin a while, then sleep until one is published. */
        int64_t spin_start = 0;
        int spins = 0;
        for (;;) {
            if (atomic_load_explicit(&team->stop, memory_order_acquire)) return NULL;
            uint32_t now = atomic_load_explicit(&team->published, memory_order_acquire);
            if (now != seen) {
                seen = now;
                break;
            }
            RNNFAST_PAUSE();
            if ((++spins & 63) != 0) continue;
            int64_t t = rnnfast_now_ns();
            if (spin_start == 0) spin_start = t;
            if (t - spin_start < RNNFAST_TEAM_SPIN_NS) continue;
            atomic_fetch_add(&team->sleepers, 1);
            if (atomic_load(&team->published) == seen && !atomic_load(&team->stop))
                rnnfast_futex_wait(&team->published, seen);
            atomic_fetch_sub(&team->sleepers, 1);
            spin_start = 0;
        }
        if (index >= team->participants) continue;
        ptrdiff_t step, task;
        while (rnnfast_team_claim(team, &step, &task)) {
            team->fn(team->context, step, task);
            atomic_fetch_add_explicit(&team->done, 1, memory_order_release);
        }
    }
}

static void rnnfast_team_after_fork_child(void) {
    /* The workers did not survive the fork: the child makes its own team when it needs one. */
    rnnfast_team_t* team = &rnnfast_team;
    team->n_workers = 0;
    atomic_store(&team->stop, 0);
    atomic_store(&team->sleepers, 0);
    pthread_mutex_init(&team->busy, NULL);
}

static void rnnfast_team_register_atfork(void) {
    pthread_atfork(NULL, NULL, rnnfast_team_after_fork_child);
}

/* Starts workers up to `wanted` (called with busy held); returns how many there are. */
static int rnnfast_team_grow(rnnfast_team_t* team, int wanted) {
    if (wanted > RNNFAST_TEAM_MAX_WORKERS) wanted = RNNFAST_TEAM_MAX_WORKERS;
    pthread_once(&rnnfast_team_atfork_once, rnnfast_team_register_atfork);
    while (team->n_workers < wanted) {
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attributes, 256 * 1024);
        int failed = pthread_create(&team->workers[team->n_workers], &attributes,
                                    rnnfast_team_worker, (void*)(intptr_t)team->n_workers);
        pthread_attr_destroy(&attributes);
        if (failed) break;
        team->n_workers++;
    }
    return team->n_workers;
}

/* Publishes step `step` (its n_tasks tasks) to the workers; returns whether a worker was
 * asleep (and had to be woken). */
static inline int rnnfast_team_publish(rnnfast_team_t* team, int64_t step) {
    atomic_store_explicit(&team->ticket, (uint64_t)step << 32, memory_order_release);
    atomic_fetch_add_explicit(&team->published, 1, memory_order_release);
    if (atomic_load_explicit(&team->sleepers, memory_order_acquire) == 0) return 0;
    rnnfast_futex_wake_all(&team->published);
    return 1;
}

/* Runs the n_tasks tasks of one step on the calling thread and the workers; returns how many
 * the workers ran, in *waited_ns how long the caller waited for them and in *woke whether a
 * worker had to be woken for it. */
static int64_t rnnfast_team_step(rnnfast_team_t* team, ptrdiff_t step, ptrdiff_t n_tasks,
                                 int64_t* done_before, int64_t* task_ns, int64_t* waited_ns,
                                 int* woke) {
    ptrdiff_t claimed_step, task;
    int64_t mine = 0;
    *woke = rnnfast_team_publish(team, step);
    int64_t start = rnnfast_now_ns();
    while (rnnfast_team_claim(team, &claimed_step, &task)) {
        team->fn(team->context, claimed_step, task);
        mine++;
    }
    int64_t finished = rnnfast_now_ns();
    if (mine > 0) *task_ns = (finished - start) / mine;
    int64_t theirs = n_tasks - mine;
    *done_before += theirs;
    /* Wait for the tasks the workers claimed: spin, then yield the core between looks. */
    int spins = 0;
    while (atomic_load_explicit(&team->done, memory_order_acquire) < *done_before) {
        RNNFAST_PAUSE();
        if ((++spins & 63) == 0 && rnnfast_now_ns() - finished > RNNFAST_TEAM_CALLER_SPIN_NS)
            sched_yield();
    }
    *waited_ns = rnnfast_now_ns() - finished;
    return theirs;
}

/* An estimate of a step's time from samples: the fastest of the trials (the first steps pay
 * for starting the workers, waking them and cold caches: an estimate that began with those
 * kept the team off for good, as a retry moves it only an eighth of the way), then a moving
 * average in which one sample (clipped to 2x the estimate: a preemption, a wake-up) weighs
 * 1/8. */
static inline void rnnfast_record(int64_t* estimate, int32_t* samples, int64_t sample,
                                  int retry) {
    if (retry) {
        /* The way not chosen has a sample only every 64 to 4096 steps: taken as it is, so that
         * one estimate that went wrong (a preemption in the trials) is corrected by the next
         * retry, not after dozens of them; a wrong switch is undone by the steps that follow. */
        *estimate = sample;
    } else if (*samples < RNNFAST_TEAM_TRIALS) {
        if (*samples == 0 || sample < *estimate) *estimate = sample;
    } else {
        if (sample > 2 * *estimate) sample = 2 * *estimate;
        *estimate += (sample - *estimate) / 8;
    }
    if (*samples < INT32_MAX) (*samples)++;
}

/* Whether the next step of `record` runs on the team (1) or on the caller alone (0): each way
 * is tried RNNFAST_TEAM_TRIALS times first; then the faster by its estimate, the team only if
 * it is clearly faster, and the other way once every RNNFAST_TEAM_RETRY_EVERY steps. */
static inline int rnnfast_team_choose(rnnfast_step_record* record) {
    record->retrying = 0;
    if (record->alone_samples < RNNFAST_TEAM_TRIALS || record->team_samples < RNNFAST_TEAM_TRIALS)
        return record->team_samples < record->alone_samples;
    int team = record->team_ns * 100 < record->alone_ns * RNNFAST_TEAM_MIN_GAIN_PERCENT;
    if (team != record->last_choice || record->retry_every == 0) {
        record->last_choice = team;
        record->retry_every = RNNFAST_TEAM_RETRY_EVERY;
    }
    if (record->retry_again) {
        record->retry_again = 0;
        record->retrying = 1;
        return !team;
    }
    if (++record->since_retry >= record->retry_every) {
        /* A retry that confirms the choice makes the next one twice as far. */
        record->since_retry = 0;
        if (record->retry_every < RNNFAST_TEAM_RETRY_MAX) record->retry_every *= 2;
        record->retrying = 1;
        return !team;
    }
    record->retrying = 0;
    return team;
}

/* Runs n_steps steps of n_tasks tasks each, step after step, on the calling thread and up to
 * n_threads - 1 workers. `kind` (0 .. RNNFAST_TEAM_KINDS - 1) names steps of one size, whose
 * timings (kept across passes) decide whether the team pays. Returns the number of tasks the
 * workers ran. */
static int64_t rnnfast_team_run(int n_threads, ptrdiff_t n_steps, ptrdiff_t n_tasks, int kind,
                                rnnfast_task_fn fn, rnnfast_step_fn whole, void* context) {
    rnnfast_team_t* team = &rnnfast_team;
    ptrdiff_t step;
    if (n_threads < 2 || n_tasks < 2 || n_steps < 1 || n_tasks > INT32_MAX
            || pthread_mutex_trylock(&team->busy) != 0) {
        for (step = 0; step < n_steps; step++) whole(context, step);
        return 0;
    }
    int workers = rnnfast_team_grow(team, n_threads - 1);
    if (workers > n_threads - 1) workers = n_threads - 1;
    rnnfast_step_record* record = &team->records[kind & (RNNFAST_TEAM_KINDS - 1)];
    team->participants = workers;
    team->n_tasks = n_tasks;
    team->fn = fn;
    team->context = context;
    atomic_store(&team->done, 0);
    int64_t by_workers = 0, done_before = 0, task_ns = 0, waited_ns = 0;
    int team_steps = 0, had_late_wait = 0, previous_on_team = 0;
    for (step = 0; step < n_steps; step++) {
        int64_t start = rnnfast_now_ns();
        int alone = team->mode == RNNFAST_TEAM_NEVER;
        if (team->mode == RNNFAST_TEAM_ADAPT) {
            record->retrying = 0;
            alone = start < team->alone_until_ns || !rnnfast_team_choose(record);
        }
        if (workers == 0 || alone) {
            previous_on_team = 0;
            whole(context, step);
            if (workers > 0)
                rnnfast_record(&record->alone_ns, &record->alone_samples,
                               rnnfast_now_ns() - start,
                               team->mode == RNNFAST_TEAM_ADAPT && record->retrying);
            continue;
        }
        int woke;
        by_workers += rnnfast_team_step(team, step, n_tasks, &done_before, &task_ns,
                                        &waited_ns, &woke);
        team_steps++;
        int64_t end = rnnfast_now_ns();
        int after_alone = !previous_on_team;
        previous_on_team = 1;
        if (woke && after_alone && n_steps > 1) {
            /* The workers slept through the pass's first step or the steps alone before: this
             * step timed their wake-up, not the team. Not a sample: a trial or retry of the
             * team is taken again at the next step, with the workers awake (taken as is, such
             * samples kept the team off for good where passes are apart). A pass of one step
             * pays the wake-up every time, and a worker that falls asleep between two team
             * steps too: those are the team's cost, and counted. */
            record->retry_again = record->retrying;
            continue;
        }
        rnnfast_record(&record->team_ns, &record->team_samples, end - start,
                       team->mode == RNNFAST_TEAM_ADAPT && record->retrying);
        if (waited_ns > RNNFAST_TEAM_LATE_NS + 4 * task_ns) {
            /* A worker lost its core inside a task: run alone for a while, unless such waits
             * are rare (apart by more than RNNFAST_TEAM_SPORADIC times this one's cost: a
             * preemption now and then costs less than the team saves in between). */
            int64_t since_last = end - team->last_late_ns;
            team->late_waits++;
            team->last_late_ns = end;
            if (since_last > RNNFAST_TEAM_SPORADIC * waited_ns) continue;
            had_late_wait = 1;
            team->penalty_ns = team->penalty_ns < RNNFAST_TEAM_PENALTY_MIN_NS
                ? RNNFAST_TEAM_PENALTY_MIN_NS
                : (team->penalty_ns * 2 > RNNFAST_TEAM_PENALTY_MAX_NS
                   ? RNNFAST_TEAM_PENALTY_MAX_NS : team->penalty_ns * 2);
            team->alone_until_ns = end + team->penalty_ns;
        }
    }
    /* The penalty comes down only after a long clean spell: probes that happen to succeed
     * between preemptions must not shrink it while the cores are contended. */
    if (team_steps > 0 && !had_late_wait
            && rnnfast_now_ns() - team->last_late_ns > 8 * team->penalty_ns)
        team->penalty_ns /= 2;
    /* Nothing claimable until the next pass publishes (a worker still looking at this pass's
     * ticket finds it spent whatever the next pass's task count). */
    atomic_store(&team->ticket, RNNFAST_TEAM_CLOSED);
    team->tasks_by_workers += by_workers;
    pthread_mutex_unlock(&team->busy);
    return by_workers;
}

/* Whether steps of `kind` run on the calling thread alone for now (the team measured that it
 * does not pay for them, or the cores are contended): a pass can then lay its data out for one
 * core. Read without the lock: a hint, which the next pass's steps decide again. */
static inline int rnnfast_team_runs_alone(int kind) {
    rnnfast_team_t* team = &rnnfast_team;
    if (team->mode != RNNFAST_TEAM_ADAPT) return team->mode == RNNFAST_TEAM_NEVER;
    if (rnnfast_now_ns() < team->alone_until_ns) return 1;
    const rnnfast_step_record* record = &team->records[kind & (RNNFAST_TEAM_KINDS - 1)];
    return record->alone_samples >= RNNFAST_TEAM_TRIALS
        && record->team_samples >= RNNFAST_TEAM_TRIALS && !record->last_choice;
}

/* Statistics of the team so far: long waits (each followed by a time alone), tasks the workers
 * ran, workers started. */
static inline void rnnfast_team_stats(int64_t* late_waits, int64_t* tasks_by_workers,
                                      int* workers) {
    rnnfast_team_t* team = &rnnfast_team;
    pthread_mutex_lock(&team->busy);
    *late_waits = team->late_waits;
    *tasks_by_workers = team->tasks_by_workers;
    *workers = team->n_workers;
    pthread_mutex_unlock(&team->busy);
}

/* Forgets the adaptation (the next passes try both ways again), and sets the mode. */
static inline void rnnfast_team_reset(int mode) {
    rnnfast_team_t* team = &rnnfast_team;
    pthread_mutex_lock(&team->busy);
    team->mode = mode;
    team->alone_until_ns = 0;
    team->penalty_ns = 0;
    team->last_late_ns = 0;
    memset(team->records, 0, sizeof team->records);
    pthread_mutex_unlock(&team->busy);
}

#else /* no futexes: every pass on the calling thread */

static int64_t rnnfast_team_run(int n_threads, ptrdiff_t n_steps, ptrdiff_t n_tasks, int kind,
                                rnnfast_task_fn fn, rnnfast_step_fn whole, void* context) {
    (void)n_threads;
    (void)n_tasks;
    (void)kind;
    (void)fn;
    for (ptrdiff_t step = 0; step < n_steps; step++) whole(context, step);
    return 0;
}

static inline void rnnfast_team_stats(int64_t* late_waits, int64_t* tasks_by_workers,
                                      int* workers) {
    *late_waits = 0;
    *tasks_by_workers = 0;
    *workers = 0;
}

static inline void rnnfast_team_reset(int mode) { (void)mode; }

static inline int rnnfast_team_runs_alone(int kind) {
    (void)kind;
    return 1;
}

#endif
#endif
