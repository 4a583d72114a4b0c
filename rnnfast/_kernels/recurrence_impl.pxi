# The recurrence kernels, included by recurrence.pyx (built for the baseline instruction set)
# and recurrence_avx2.pyx (built with AVX2 and FMA): one source, two compilations.
#
# They are a whole forward pass and a whole backward pass, each one call
# without the GIL.
#
# Forward, for t = 0..T-1 (h_{-1} = h0), in place in `h`, which first receives the input
# projection P = X W_xh^T + b (+ the noise on a_t) for all T*B rows (one GEMM):
#     h_t = act(P_t + h_{t-1} @ W_hh^T)
# Backward, for t = T-1..0, into `da` (da_T @ W_hh is replaced by dh_n, the carried gradient):
#     da_t = (dout_t + da_{t+1} @ W_hh) * act'(h_t)
# then the weight gradients, dx and dh0 as single GEMMs over all T*B rows. On request it also
# measures norms[t, b] = ||dout_t + da_{t+1} @ W_hh|| (= ||dL/dh_t||) for each row, in the step's
# epilogue, before the multiply by act' (rnnfast/_kernels/step.pxd, finish_rows).
#
# Leaky passes (a leak alpha (H,) given) keep f_t = act(a_t) in a buffer of their own and add the
# leak in the step's epilogue, after the activation (forward) and before act' (backward):
#     f_t = act(P_t + h_{t-1} @ W_hh^T),   h_t = (1 - alpha) h_{t-1} + alpha f_t (+ state noise)
#     dh_t = c_t + da_{t+1} @ W_hh,        da_t = alpha dh_t act'(f_t),
#     c_{t-1} = dout_{t-1} + (1 - alpha) dh_t
# with c_t (one (B, H) buffer, `carry`) in the place dout_t takes in the plain step, so that the
# norms are still measured on the step's matmul result, and dh0 = c_{-1} + da_0 @ W_hh.
#
# Both steps are "C = finish(init + X @ M)" with M = W_hh^T forward and M = W_hh backward, so
# one micro-kernel and one BLAS path (rnnfast/_kernels/step.pxd) serve both directions. M is a
# scratch copy whose rows are zero-padded to a multiple of COLUMN_PAD, so the micro-kernel always
# reads whole column blocks; for the micro-kernel it is also packed in column panels. Nothing
# here allocates, validates or touches a Python object: the caller (rnnfast/_kernels/entry.pyx)
# checked and allocated everything, and describes a pass by pointers (passes.pxd).
from cython cimport floating
from cpython.pycapsule cimport PyCapsule_New
from libc.math cimport sqrt
from libc.string cimport memcpy, memset

from rnnfast._kernels.activation cimport (BACKWARD_RELU, BACKWARD_TANH, Epilogue,
                                          FORWARD_RELU, FORWARD_TANH, PRODUCT_ONLY)
from rnnfast._kernels.blas cimport gemm, weight_gemm_f32
from rnnfast._kernels.passes cimport (BackwardPass, ForwardPass, KernelTable, MatmulPass,
                                      SoftmaxPass)
from rnnfast._kernels.step cimport (LOOPS_MAX_MNK, NATURAL_LAYOUT, VECTOR_BYTES, any_gemm,
                                    block_columns,
                                    finish_blocks, finish_rows, gemm_columns, gemm_step,
                                    large_step,
                                    shifted, small_step, step_product, transpose_f32,
                                    transpose_f64)

# M's row length is a multiple of this, a whole number of micro-kernel blocks for every build.
COLUMN_PAD = 32
# The bytes of one micro-kernel column block in this build (the caller sizes the threaded
# backward's scratch for the norms by it).
BLOCK_BYTES = 2 * VECTOR_BYTES


cdef void forward_loop(floating* h, const floating* h0, Py_ssize_t T, Py_ssize_t B,
                       Py_ssize_t H, const floating* M, Py_ssize_t ldm, bint transposed,
                       const Py_ssize_t* active, Epilogue activate, bint use_blas,
                       bint own_gemm, int n_threads, const floating* alpha, floating* act,
                       Py_ssize_t act_step, const floating* noise,
                       bint alternate) noexcept nogil:
    """The forward time loop over h (T, B, H): large steps (our GEMM with own_gemm, on one
    thread or on n_threads; else BLAS), or small steps on one thread or on n_threads.

    Step t updates the first active[t] rows only (the batch is sorted by length, so the
    sequences still running are a prefix); the caller zeroes the other rows afterwards.
    With alpha (the leak, (H,); NULL for the plain RNN) the steps are leaky: act(a_t) goes to
    act + t * act_step (a (T, B, H) buffer kept for the backward pass, act_step = B * H, or one
    (B, H) scratch, act_step = 0), and h_t = (1 - alpha) h_{t-1} + alpha act(a_t), plus the
    state noise noise_t when noise (T, B, H) is not NULL.
    """
    cdef Py_ssize_t t
    cdef const floating* h_prev = h0
    cdef floating* h_t
    cdef floating* act_t
    cdef const floating* noise_t = NULL
    if use_blas and own_gemm and n_threads > 1:
        gemm_forward_threaded(h, h0, T, B, H, M, active, activate, n_threads, alpha, act,
                              act_step, noise)
        return
    if not use_blas and n_threads > 1:
        forward_loop_threaded(h, h0, T, B, H, M, ldm, transposed, active, activate, n_threads,
                              alpha, act, act_step, noise)
        return
    for t in range(T):
        h_t = h + t * B * H
        # Plain: h_t = act(h_t + h_prev @ W_hh^T) in place (`finish` reads no h going forward).
        # Leaky: act_t = act(h_t + h_prev @ W_hh^T), then h_t = (1 - alpha) h_prev + alpha act_t.
        act_t = h_t if alpha == NULL else act + t * act_step
        if noise != NULL:
            noise_t = noise + t * B * H
        if use_blas:
            large_step(own_gemm, h_prev, M, ldm, h_t, h_prev, act_t, active[t], H, H,
                       activate, NULL, alpha, noise_t, h_t)
        else:
            small_step(h_prev, M, ldm, transposed, h_t, h_prev, act_t, active[t], H, H,
                       activate, NULL, alpha, noise_t, h_t, alternate and t % 2 == 1)
        h_prev = h_t


cdef void take_norms(floating* norms, const double* squares, Py_ssize_t T, Py_ssize_t B,
                     const Py_ssize_t* active) noexcept nogil:
    """norms[t, b] = sqrt(squares[t, b]) (both (T, B)), rounded to the dtype once, for the rows
    still running at step t; 0 for the others (no state past a sequence's end, so no gradient
    on it). One pass after the time loop, so that the loop itself only stores sums."""
    cdef Py_ssize_t t, b
    for t in range(T):
        for b in range(active[t]):
            norms[t * B + b] = <floating>sqrt(squares[t * B + b])
        for b in range(active[t], B):
            norms[t * B + b] = 0


cdef inline const floating* leak_extra(const floating* dout, Py_ssize_t t, Py_ssize_t BH,
                                       const floating* alpha) noexcept nogil:
    """What a leaky backward step t adds to its carry: dout_{t-1} (steps BH apart); NULL at
    t = 0 (dh0 gets no output gradient) and for plain steps."""
    if alpha == NULL or t == 0:
        return NULL
    return dout + (t - 1) * BH


cdef inline floating* leak_target(floating* carry, floating* dh0, Py_ssize_t t) noexcept nogil:
    """Where a leaky backward step t writes its carry: the next step's init, or at t = 0, dh0
    (which the caller completes with da_0 @ W_hh)."""
    return dh0 if t == 0 else carry


cdef void backward_loop(floating* da, const floating* dout, const floating* h,
                        const floating* dh_n, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
                        const floating* M, Py_ssize_t ldm, const Py_ssize_t* active,
                        Epilogue derivative, bint use_blas, bint own_gemm, int n_threads,
                        floating* norms,
                        double* squares, const floating* alpha, floating* carry,
                        floating* dh0, bint alternate) noexcept nogil:
    """The backward time loop into da (T, B, H): large steps (our GEMM with own_gemm, on one
    thread or, without norms, on n_threads; else BLAS), or small steps on one thread or on
    n_threads.

    At step t, rows active[t + 1] .. active[t] - 1 take their last step: the gradient from
    beyond it is dh_n, not a matmul, so those rows (for every t) are done first, and the rows
    past a sequence's end get da = 0. The time loop then runs the first active[t + 1] rows.

    h holds act(a_t): the states themselves in the plain RNN. With alpha (the leak, (H,)),
    step t's init is carry (B, H) instead of dout_t: each step leaves there
    dout_{t-1} + (1 - alpha) dL/dh_t for the step before it (leak_backward), which adds
    da_t @ W_hh; step 0 leaves (1 - alpha) dL/dh_0 in dh0 (B, H) instead.

    norms (T, B), or NULL for none, receives ||dL/dh_t|| of every row, 0 past a sequence's
    end. squares is scratch for it, rows of B: rows 0..T-1 take each step's sums of squares,
    rows from T on (2 per column block) are the threaded loop's (see backward_loop_threaded).
    """
    cdef Py_ssize_t BH = B * H, t, i
    cdef Py_ssize_t ending, running
    cdef floating* da_t
    cdef const floating* g_t
    cdef const floating* extra
    cdef bint measure = norms != NULL
    for t in range(T):
        running = active[t + 1] if t + 1 < T else 0
        ending = active[t]
        da_t = da + t * BH
        g_t = dout + t * BH
        for i in range(running * H, ending * H):
            da_t[i] = g_t[i] + dh_n[i]
        extra = leak_extra(dout, t, BH, alpha)
        finish_rows(da_t + running * H, h + t * BH + running * H, ending - running, H, H,
                    derivative, squares + t * B + running if measure and running < ending
                    else NULL, False, alpha, shifted(extra, running * H),
                    NULL if alpha == NULL else leak_target(carry, dh0, t) + running * H)
        if ending < B:
            memset(da_t + ending * H, 0, (B - ending) * H * sizeof(floating))
    if use_blas and own_gemm and n_threads > 1 and not measure:
        gemm_backward_threaded(da, dout, h, T, B, H, M, active, derivative, n_threads, alpha,
                               carry, dh0)
    elif not use_blas and n_threads > 1:
        backward_loop_threaded(da, dout, h, T, B, H, M, ldm, active, derivative, n_threads,
                               norms, squares, alpha, carry, dh0)
    else:
        for t in range(T - 2, -1, -1):
            # da_t = (init + da_{t+1} @ W_hh) * act'(a_t) (leaky: * alpha), for the sequences
            # still running; init = dout_t, or with a leak the carry
            if use_blas:
                large_step(own_gemm, da + (t + 1) * BH, M, ldm,
                           dout + t * BH if alpha == NULL else carry, h + t * BH, da + t * BH,
                           active[t + 1], H, H, derivative, squares + t * B if measure else NULL,
                           alpha, leak_extra(dout, t, BH, alpha), leak_target(carry, dh0, t))
            else:
                small_step(da + (t + 1) * BH, M, ldm, False,
                           dout + t * BH if alpha == NULL else carry,
                           h + t * BH, da + t * BH, active[t + 1], H, H, derivative,
                           squares + t * B if measure else NULL, alpha,
                           leak_extra(dout, t, BH, alpha), leak_target(carry, dh0, t),
                           alternate and t % 2 == 1)
    if measure:
        take_norms(norms, squares, T, B, active)


# The threaded loops run on a team of threads kept alive between passes (team.h): each step's
# column blocks, in tasks of a few, are claimed by whichever thread of the team is free, so a
# thread that has lost its core holds no step up; results do not depend on who computes what.
ctypedef void (*team_task)(void* context, Py_ssize_t step, Py_ssize_t task) noexcept nogil
ctypedef void (*team_step)(void* context, Py_ssize_t step) noexcept nogil

cdef extern from "team.h" nogil:
    long long team_run "rnnfast_team_run"(int n_threads, Py_ssize_t n_steps, Py_ssize_t n_tasks,
                                          int kind, team_task task, team_step whole,
                                          void* context) noexcept
    void team_stats "rnnfast_team_stats"(long long* late_waits, long long* tasks_by_workers,
                                         int* workers) noexcept
    void team_reset "rnnfast_team_reset"(int mode) noexcept
    bint team_runs_alone "rnnfast_team_runs_alone"(int kind) noexcept

# A task is at least this many multiply-adds of column blocks (a claim costs a cache-line
# transfer between cores, ~0.1-0.2 us), and a step has about four tasks per thread, to balance
# while each task streams long runs of columns.
cdef enum:
    TASK_MIN_MULTIPLY_ADDS = 16384
    TASKS_PER_THREAD = 4


cdef inline Py_ssize_t blocks_per_task(Py_ssize_t B, Py_ssize_t H, Py_ssize_t CB,
                                       Py_ssize_t n_blocks, int n_threads) noexcept nogil:
    cdef Py_ssize_t per_task = (TASK_MIN_MULTIPLY_ADDS + B * H * CB - 1) // (B * H * CB)
    cdef Py_ssize_t balanced = (n_blocks + TASKS_PER_THREAD * n_threads - 1) // (
        TASKS_PER_THREAD * n_threads)
    return per_task if per_task > balanced else balanced


cdef enum StepFamily:
    SMALL_STEPS = 0  # the small-step kernel
    GEMM_STEPS = 1  # the large steps' GEMM
    ROW_PRODUCTS = 2  # the pass's input projection (forward) or dx (backward), rows shared
    LAYER_PRODUCTS = 3  # GEMMs of the layers above (matmul_pass)


cdef inline int step_kind(Py_ssize_t work, bint backward, bint is_double,
                          StepFamily family) noexcept nogil:
    """Steps of about one size, for the team's timings (team.h): the octave of their
    multiply-adds (B * H * H for a time step; at most 2**31), the family, the direction and
    the dtype; 0 .. 511 (RNNFAST_TEAM_KINDS)."""
    cdef int octave = 0
    while work > 1 and octave < 31:
        work >>= 1
        octave += 1
    return (octave * 4 + <int>family) * 4 + 2 * backward + is_double


ctypedef struct StepTasks:
    # One threaded time loop, typed by is_double (float otherwise): the arrays of
    # forward_loop_threaded or backward_loop_threaded, and how the blocks form tasks.
    bint is_double
    void* out  # h (forward) or da (backward), (T, B, H)
    const void* h0  # forward: the initial state
    const void* init  # backward: dout (T, B, H)
    const void* h  # backward: act(a_t) (T, B, H)
    const void* M
    Py_ssize_t ldm  # M's row stride where it is W_hh's rows (see step_product)
    bint transposed  # forward: M is W_hh^T, taken as the backward's M is (see small_step)
    const Py_ssize_t* active
    Py_ssize_t T, B, H, CB, n_blocks, per_task
    Epilogue kind
    const void* alpha
    void* act  # forward: act(a_t), act_step apart
    Py_ssize_t act_step
    const void* noise  # forward: the state noise
    void* carry  # backward, leaky
    void* dh0  # backward, leaky
    double* squares  # backward: NULL, or the norms' scratch (see backward_loop_threaded)


cdef inline void task_blocks(const StepTasks* c, Py_ssize_t task, Py_ssize_t* first,
                             Py_ssize_t* last) noexcept nogil:
    """The column blocks of a task: first .. last - 1."""
    first[0] = task * c.per_task
    last[0] = first[0] + c.per_task if first[0] + c.per_task < c.n_blocks else c.n_blocks


cdef inline void forward_blocks(const StepTasks* c, floating* h, Py_ssize_t t,
                                Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    """Column blocks first .. last - 1 of forward step t: the product over their columns in
    one call, then the epilogue (see forward_loop_threaded); the bits of small_step on them."""
    cdef Py_ssize_t BH = c.B * c.H
    cdef Py_ssize_t c0 = first * c.CB, c1 = last * c.CB if last * c.CB < c.H else c.H
    cdef const floating* h_prev = <const floating*>c.h0 if t == 0 else h + (t - 1) * BH
    cdef const floating* alpha = <const floating*>c.alpha
    cdef floating* act_t = h + t * BH if alpha == NULL else <floating*>c.act + t * c.act_step
    step_product(not c.transposed, h_prev, c.active[t], c.H, <const floating*>c.M, c.ldm,
                 h + t * BH, act_t, c.H, c0, c1, False)
    finish_blocks(act_t, h_prev, c.active[t], c.H, c0, c1, c.kind, NULL, alpha,
                  shifted(<const floating*>c.noise, t * BH), h + t * BH)


cdef void forward_task(void* context, Py_ssize_t t, Py_ssize_t task) noexcept nogil:
    cdef const StepTasks* c = <const StepTasks*>context
    cdef Py_ssize_t first, last
    task_blocks(c, task, &first, &last)
    if c.is_double:
        forward_blocks(c, <double*>c.out, t, first, last)
    else:
        forward_blocks(c, <float*>c.out, t, first, last)


cdef void forward_step(void* context, Py_ssize_t t) noexcept nogil:
    cdef const StepTasks* c = <const StepTasks*>context
    if c.is_double:
        forward_blocks(c, <double*>c.out, t, 0, c.n_blocks)
    else:
        forward_blocks(c, <float*>c.out, t, 0, c.n_blocks)


cdef void forward_loop_threaded(floating* h, const floating* h0, Py_ssize_t T, Py_ssize_t B,
                                Py_ssize_t H, const floating* M, Py_ssize_t ldm,
                                bint transposed, const Py_ssize_t* active, Epilogue activate,
                                int n_threads, const floating* alpha, floating* act,
                                Py_ssize_t act_step, const floating* noise) noexcept nogil:
    """forward_loop's small-step path with each step's column blocks shared among n_threads
    of the team (team.h), a step after another.

    Each column block is computed by one thread, the same way whoever it is, so results do
    not depend on the thread count. A leaky block reads only its own columns of h_{t-1} and
    writes only its own of h_t.
    """
    cdef StepTasks c
    c.is_double = floating is double
    c.out, c.h0, c.M, c.ldm, c.transposed, c.active = h, h0, M, ldm, transposed, active
    c.T, c.B, c.H = T, B, H
    c.CB = block_columns(M)
    c.n_blocks = (H + c.CB - 1) // c.CB
    c.per_task = blocks_per_task(B, H, c.CB, c.n_blocks, n_threads)
    c.kind, c.alpha, c.act, c.act_step, c.noise = activate, alpha, act, act_step, noise
    team_run(n_threads, T, (c.n_blocks + c.per_task - 1) // c.per_task,
             step_kind(B * H * H, False, c.is_double, SMALL_STEPS), forward_task, forward_step, &c)


cdef inline void add_block_squares(double* squares, Py_ssize_t B, Py_ssize_t t,
                                   Py_ssize_t first, Py_ssize_t n_blocks,
                                   Py_ssize_t rows) noexcept nogil:
    """squares[t, b] = the sum of squares[first + blk, b] over the blocks (rows of B), for
    b < rows, added in their order from 0: the sum small_step makes, bit for bit."""
    cdef Py_ssize_t b, blk
    cdef double total
    for b in range(rows):
        total = 0
        for blk in range(n_blocks):
            total += squares[(first + blk) * B + b]
        squares[t * B + b] = total


cdef inline void backward_blocks(const StepTasks* c, floating* da, Py_ssize_t step,
                                 Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    """Column blocks first .. last - 1 of the backward loop's step `step`, i.e.
    t = T - 2 - step: the product over their columns in one call, then the epilogue block by
    block, each block's squares to its own row (see backward_loop_threaded)."""
    cdef Py_ssize_t T = c.T, B = c.B, BH = c.B * c.H, t = c.T - 2 - step, blk, col0, width
    cdef Py_ssize_t c0 = first * c.CB, c1 = last * c.CB if last * c.CB < c.H else c.H
    cdef Py_ssize_t rows = c.active[t + 1]
    cdef const floating* alpha = <const floating*>c.alpha
    cdef const floating* dout = <const floating*>c.init
    cdef const floating* init = dout + t * BH if alpha == NULL else <const floating*>c.carry
    cdef const floating* h_t = <const floating*>c.h + t * BH
    cdef const floating* extra = leak_extra(dout, t, BH, alpha)
    cdef floating* carry = leak_target(<floating*>c.carry, <floating*>c.dh0, t)
    cdef floating* da_t = da + t * BH
    cdef double* block_squares = NULL
    step_product(False, da + (t + 1) * BH, rows, c.H, <const floating*>c.M, c.ldm, init, da_t,
                 c.H, c0, c1, False)
    if c.squares == NULL:
        finish_blocks(da_t, h_t, rows, c.H, c0, c1, c.kind, NULL, alpha, extra, carry)
        return
    for blk in range(first, last):
        if blk == 0 and t + 2 < T:  # step t + 1's block sums, now complete, in block order
            add_block_squares(c.squares, B, t + 1, T + ((t + 1) % 2) * c.n_blocks, c.n_blocks,
                              c.active[t + 2])
        block_squares = c.squares + (T + (t % 2) * c.n_blocks + blk) * B
        col0 = blk * c.CB
        width = c.H - col0 if c.H - col0 < c.CB else c.CB
        finish_rows(da_t + col0, h_t + col0, rows, width, c.H, c.kind, block_squares, False,
                    shifted(alpha, col0), shifted(extra, col0),
                    NULL if carry == NULL else carry + col0)


cdef void backward_task(void* context, Py_ssize_t step, Py_ssize_t task) noexcept nogil:
    cdef const StepTasks* c = <const StepTasks*>context
    cdef Py_ssize_t first, last
    task_blocks(c, task, &first, &last)
    if c.is_double:
        backward_blocks(c, <double*>c.out, step, first, last)
    else:
        backward_blocks(c, <float*>c.out, step, first, last)


cdef void backward_step(void* context, Py_ssize_t step) noexcept nogil:
    cdef const StepTasks* c = <const StepTasks*>context
    if c.is_double:
        backward_blocks(c, <double*>c.out, step, 0, c.n_blocks)
    else:
        backward_blocks(c, <float*>c.out, step, 0, c.n_blocks)


cdef void backward_loop_threaded(floating* da, const floating* dout, const floating* h,
                                 Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, const floating* M,
                                 Py_ssize_t ldm, const Py_ssize_t* active, Epilogue derivative,
                                 int n_threads, floating* norms, double* squares,
                                 const floating* alpha, floating* carry,
                                 floating* dh0) noexcept nogil:
    """backward_loop's small-step path for steps T-2..0 (the caller did the last steps), with
    each step's column blocks shared among n_threads of the team, as in
    forward_loop_threaded (a leaky block reads and writes only its own columns of the carry).

    Norms: each block's sums of squares go to a row of scratch of their own (squares rows T
    on, 2 * n_blocks rows: one set for even steps, one for odd), and are added up in block
    order into squares[t], so the norms do not depend on the thread count either. Step t + 1's
    set is added up during step t, by the thread that computes block 0 (step t + 1 is complete
    before step t starts; step t writes the other set). Step 0's after the loop.
    """
    cdef StepTasks c
    if T < 2:
        return
    c.is_double = floating is double
    c.out, c.init, c.h, c.M, c.ldm, c.transposed, c.active = da, dout, h, M, ldm, False, active
    c.T, c.B, c.H = T, B, H
    c.CB = block_columns(M)
    c.n_blocks = (H + c.CB - 1) // c.CB
    c.per_task = blocks_per_task(B, H, c.CB, c.n_blocks, n_threads)
    c.kind, c.alpha, c.carry, c.dh0 = derivative, alpha, carry, dh0
    c.squares = squares if norms != NULL else NULL
    team_run(n_threads, T - 1, (c.n_blocks + c.per_task - 1) // c.per_task,
             step_kind(B * H * H, True, c.is_double, SMALL_STEPS), backward_task, backward_step, &c)
    if norms != NULL:
        add_block_squares(squares, B, 0, T, c.n_blocks, active[1])


ctypedef struct GemmTasks:
    # One time loop of large steps on our GEMM shared by the team: the arguments forward_loop
    # and backward_loop give large_step, typed by is_double; a task is a range of panels.
    bint is_double
    void* out  # h (forward) or da (backward), (T, B, H)
    const void* h0  # forward: the initial state
    const void* dout  # backward: (T, B, H)
    const void* h  # backward: act(a_t) (T, B, H)
    const void* M
    const Py_ssize_t* active
    Py_ssize_t T, B, H, NR, per_task, n_tasks
    Epilogue kind
    const void* alpha
    void* act  # forward: act(a_t), act_step apart
    Py_ssize_t act_step
    const void* noise  # forward: the state noise
    void* carry  # backward, leaky
    void* dh0  # backward, leaky


cdef inline Py_ssize_t gemm_tasks(GemmTasks* c, int n_threads) noexcept nogil:
    """Splits each step's panels into c.n_tasks ranges of c.per_task panels: about two per
    thread (a task packs its rows of X for its own panels, so fewer and longer tasks pay);
    returns the count."""
    cdef Py_ssize_t n_panels = (c.H + c.NR - 1) // c.NR
    c.per_task = (n_panels + 2 * n_threads - 1) // (2 * n_threads)
    c.n_tasks = (n_panels + c.per_task - 1) // c.per_task
    return c.n_tasks


cdef inline void gemm_forward_columns(const GemmTasks* c, floating* h, Py_ssize_t t,
                                      Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Columns c0 .. c1 - 1 of forward step t: forward_loop's large step on them."""
    cdef Py_ssize_t BH = c.B * c.H
    cdef const floating* h_prev = <const floating*>c.h0 if t == 0 else h + (t - 1) * BH
    cdef const floating* alpha = <const floating*>c.alpha
    cdef floating* act_t = h + t * BH if alpha == NULL else <floating*>c.act + t * c.act_step
    gemm_step(h_prev, <const floating*>c.M, h + t * BH, h_prev, act_t, c.active[t], c.H, c.H,
              c0, c1, c.kind, NULL, alpha, shifted(<const floating*>c.noise, t * BH),
              h + t * BH)


cdef inline void gemm_backward_columns(const GemmTasks* c, floating* da, Py_ssize_t step,
                                       Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Columns c0 .. c1 - 1 of the backward loop's step `step` (t = T - 2 - step): its large
    step on them."""
    cdef Py_ssize_t BH = c.B * c.H, t = c.T - 2 - step
    cdef const floating* alpha = <const floating*>c.alpha
    cdef const floating* dout = <const floating*>c.dout
    gemm_step(da + (t + 1) * BH, <const floating*>c.M,
              dout + t * BH if alpha == NULL else <const floating*>c.carry,
              <const floating*>c.h + t * BH, da + t * BH, c.active[t + 1], c.H, c.H, c0, c1,
              c.kind, NULL, alpha, leak_extra(dout, t, BH, alpha),
              leak_target(<floating*>c.carry, <floating*>c.dh0, t))


cdef inline void gemm_task_columns(const GemmTasks* c, Py_ssize_t task, Py_ssize_t* c0,
                                   Py_ssize_t* c1) noexcept nogil:
    c0[0] = task * c.per_task * c.NR
    c1[0] = c0[0] + c.per_task * c.NR if c0[0] + c.per_task * c.NR < c.H else c.H


cdef void gemm_forward_task(void* context, Py_ssize_t t, Py_ssize_t task) noexcept nogil:
    cdef const GemmTasks* c = <const GemmTasks*>context
    cdef Py_ssize_t c0, c1
    gemm_task_columns(c, task, &c0, &c1)
    if c.is_double:
        gemm_forward_columns(c, <double*>c.out, t, c0, c1)
    else:
        gemm_forward_columns(c, <float*>c.out, t, c0, c1)


cdef void gemm_forward_whole(void* context, Py_ssize_t t) noexcept nogil:
    cdef const GemmTasks* c = <const GemmTasks*>context
    if c.is_double:
        gemm_forward_columns(c, <double*>c.out, t, 0, c.H)
    else:
        gemm_forward_columns(c, <float*>c.out, t, 0, c.H)


cdef void gemm_backward_task(void* context, Py_ssize_t step, Py_ssize_t task) noexcept nogil:
    cdef const GemmTasks* c = <const GemmTasks*>context
    cdef Py_ssize_t c0, c1
    gemm_task_columns(c, task, &c0, &c1)
    if c.is_double:
        gemm_backward_columns(c, <double*>c.out, step, c0, c1)
    else:
        gemm_backward_columns(c, <float*>c.out, step, c0, c1)


cdef void gemm_backward_whole(void* context, Py_ssize_t step) noexcept nogil:
    cdef const GemmTasks* c = <const GemmTasks*>context
    if c.is_double:
        gemm_backward_columns(c, <double*>c.out, step, 0, c.H)
    else:
        gemm_backward_columns(c, <float*>c.out, step, 0, c.H)


cdef void gemm_forward_threaded(floating* h, const floating* h0, Py_ssize_t T, Py_ssize_t B,
                                Py_ssize_t H, const floating* M, const Py_ssize_t* active,
                                Epilogue activate, int n_threads, const floating* alpha,
                                floating* act, Py_ssize_t act_step,
                                const floating* noise) noexcept nogil:
    """forward_loop's large steps on our GEMM with each step's panels shared among n_threads
    of the team: the bits of one thread (see gemm_step), whoever computes what."""
    cdef GemmTasks c
    c.is_double = floating is double
    c.out, c.h0, c.M, c.active = h, h0, M, active
    c.T, c.B, c.H, c.NR = T, B, H, gemm_columns(M)
    c.kind, c.alpha, c.act, c.act_step, c.noise = activate, alpha, act, act_step, noise
    team_run(n_threads, T, gemm_tasks(&c, n_threads),
             step_kind(B * H * H, False, c.is_double, GEMM_STEPS), gemm_forward_task,
             gemm_forward_whole, &c)


cdef void gemm_backward_threaded(floating* da, const floating* dout, const floating* h,
                                 Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, const floating* M,
                                 const Py_ssize_t* active, Epilogue derivative,
                                 int n_threads, const floating* alpha, floating* carry,
                                 floating* dh0) noexcept nogil:
    """backward_loop's large steps T-2..0 on our GEMM, each step's panels shared among
    n_threads of the team (no norms: those sum each row whole, on one thread)."""
    cdef GemmTasks c
    if T < 2:
        return
    c.is_double = floating is double
    c.out, c.dout, c.h, c.M, c.active = da, dout, h, M, active
    c.T, c.B, c.H, c.NR = T, B, H, gemm_columns(M)
    c.kind, c.alpha, c.carry, c.dh0 = derivative, alpha, carry, dh0
    team_run(n_threads, T - 1, gemm_tasks(&c, n_threads),
             step_kind(B * H * H, True, c.is_double, GEMM_STEPS), gemm_backward_task,
             gemm_backward_whole, &c)


cdef void copy_padded(const floating* W, Py_ssize_t n, floating* M, Py_ssize_t ldm,
                      bint transpose) noexcept nogil:
    """M[:, :n] = W.T (or W), M[:, n:] = 0, for a square W (n, n) and M (n, ldm >= n): the
    layout BLAS reads. The transpose goes tile by tile (16 x 16), a few cache lines at a time."""
    cdef Py_ssize_t i, j, i0, j0, i_end, j_end
    if transpose:
        for i0 in range(0, n, 16):
            i_end = i0 + 16 if i0 + 16 < n else n
            for j0 in range(0, n, 16):
                j_end = j0 + 16 if j0 + 16 < n else n
                for i in range(i0, i_end):
                    for j in range(j0, j_end):
                        M[j * ldm + i] = W[i * n + j]
    else:
        for i in range(n):
            memcpy(M + i * ldm, W + i * n, n * sizeof(floating))
    if ldm > n:
        for i in range(n):
            memset(M + i * ldm + n, 0, (ldm - n) * sizeof(floating))


cdef void pack_panels(const floating* W, Py_ssize_t n, floating* M, Py_ssize_t ldm,
                      bint transpose, Py_ssize_t CB) noexcept nogil:
    """The same matrix as copy_padded (W.T or W, zero-padded to M's row length ldm, a multiple
    of CB), packed for the micro-kernel (CB = block_columns) or the GEMM (CB = gemm_columns):
    panel p holds columns p*CB .. p*CB + CB - 1 of every row, row after row, so a step reads
    each panel as one contiguous stream."""
    pack_matrix_panels(W, n, n, ldm // CB, M, transpose, CB)


cdef void pack_matrix_panels(const floating* W, Py_ssize_t K, Py_ssize_t N, Py_ssize_t panels,
                             floating* M, bint transpose, Py_ssize_t CB) noexcept nogil:
    """Mop (K, N) in `panels` panels of CB columns (zero past N), as pack_panels lays them out:
    Mop = W.T for W (N, K) with transpose, else W (K, N) itself."""
    cdef Py_ssize_t p, j, c, col0, width
    cdef floating* row
    for p in range(panels):
        col0 = p * CB
        width = N - col0 if N - col0 < CB else CB
        width = 0 if width < 0 else width  # a panel of padding only
        for j in range(K):
            row = M + p * K * CB + j * CB
            if transpose:  # M[j, col] = W[col, j]: a column of W
                for c in range(width):
                    row[c] = W[(col0 + c) * K + j]
            else:
                memcpy(row, W + j * N + col0, width * sizeof(floating))
            memset(row + width, 0, (CB - width) * sizeof(floating))


cdef const floating* product_panels(const floating* W_xh, Py_ssize_t D, Py_ssize_t H,
                                    void* scratch, bint transpose) noexcept nogil:
    """W_xh.T (D, H) with transpose (the input projection's), else W_xh (H, D) (dx's), in
    GEMM panels in scratch (room for K * (N + 64)); NULL without scratch: BLAS's products."""
    cdef floating* M = <floating*>scratch
    cdef Py_ssize_t NR = gemm_columns(W_xh)
    cdef Py_ssize_t K = D if transpose else H, N = H if transpose else D
    if M != NULL:
        pack_matrix_panels(W_xh, K, N, (N + NR - 1) // NR, M, transpose, NR)
    return M


cdef inline bint aligned_for(bint align, int n_threads, Py_ssize_t work, bint backward,
                             bint is_double) noexcept nogil:
    """Whether a pass's small steps read W_hh's copy on cache lines (align, see step_matrix):
    on the team only while it runs such steps on the calling thread alone. The copy is made in
    the calling core's cache at every pass, where the other core's first reads of it fetch it
    (9,4,512,512 on two threads ran 1.2-1.3x slower with it), while W_hh itself stays in both
    cores' caches from one pass to the next."""
    if not align or n_threads < 2:
        return align
    return team_runs_alone(step_kind(work, backward, is_double, SMALL_STEPS))


cdef const floating* step_matrix(const floating* W, Py_ssize_t n, floating* M, Py_ssize_t* ldm,
                                 bint transpose, bint use_blas, bint own_gemm, bint align,
                                 bint transposed) noexcept nogil:
    """W.T (or W) in the layout the chosen step path reads: for large steps, copied into M in
    GEMM panels (own_gemm) or padded for BLAS; for small steps in builds that read W as it is
    (NATURAL_LAYOUT), W itself (*ldm set to n), or with align (unless W is so already) a copy
    in M whose rows start on cache lines, *ldm apart, or with transpose and transposed W.T so
    (the forward steps then run as the backward's: see small_step); else M in the
    micro-kernel's panels. Returns what the steps read. Packed once per pass, the panels serve
    every step (BLAS packs W_hh at every call)."""
    if use_blas and own_gemm:
        pack_panels(W, n, M, ldm[0], transpose, gemm_columns(W))
    elif use_blas:
        copy_padded(W, n, M, ldm[0], transpose)
    elif NATURAL_LAYOUT and transpose and transposed:
        ldm[0] = (n * sizeof(floating) + 63) // 64 * 64 // sizeof(floating)  # whole lines
        if floating is float:
            transpose_f32(W, n, M, ldm[0])
        else:
            transpose_f64(W, n, M, ldm[0])
    elif NATURAL_LAYOUT:
        # A vector load that spans two cache lines costs two: W_hh 16 bytes off a line made
        # passes 1.12-1.31x slower (switches.pxi, align_steps_min_steps).
        if not align or (<size_t>W % 64 == 0 and (n * sizeof(floating)) % 64 == 0):
            ldm[0] = n
            return W
        ldm[0] = (n * sizeof(floating) + 63) // 64 * 64 // sizeof(floating)  # whole lines
        copy_padded(W, n, M, ldm[0], False)
    else:
        pack_panels(W, n, M, ldm[0], transpose, block_columns(W))
    return M


include "products_impl.pxi"
include "softmax_impl.pxi"


cdef void forward_pass(const ForwardPass* p, floating* out) noexcept nogil:
    """out = [h_1, ..., h_T] (the pass's out, typed) for x (T, B, D), h0 (B, H), W_xh (H, D),
    W_hh (H, H), as ForwardPass describes them (rnnfast/_kernels/passes.pxd).

    The input projection P = X W_xh^T (+ b, + the noise) goes to out first, as one GEMM (or
    product_threads row ranges of it on the team); the time loop then turns it into the
    states in place. Rows past a sequence's end are zero.
    """
    cdef Py_ssize_t T = p.T, B = p.B, H = p.H, t, ldm = p.ldm
    cdef const floating* M
    cdef bint transposed
    cdef ProductTasks c
    c.is_double, c.forward = floating is double, p
    c.panels = product_panels(<const floating*>p.W_xh, p.D, H, p.product_matrix, True)
    run_pieces(&c, T * B, 16, p.product_threads, T * B * p.D * H, False, ROW_PRODUCTS,
               projection_task, projection_pieces)
    # the forward step right-multiplies by W_hh^T
    transposed = NATURAL_LAYOUT and not p.use_blas and p.transposed_steps
    M = step_matrix(<const floating*>p.W_hh, H, <floating*>p.M, &ldm, True, p.use_blas,
                    p.own_gemm, aligned_for(p.align_steps, p.n_threads, B * H * H, False,
                                            floating is double), transposed)
    forward_loop(out, <const floating*>p.h0, T, B, H, M, ldm, transposed, p.active,
                 FORWARD_RELU if p.relu else FORWARD_TANH, p.use_blas, p.own_gemm, p.n_threads,
                 <const floating*>p.leak, <floating*>p.act, p.act_step,
                 <const floating*>p.state_noise, p.alternate)
    for t in range(T):  # outputs past a sequence's end are zeros
        if p.active[t] < B:
            memset(out + (t * B + p.active[t]) * H, 0, (B - p.active[t]) * H * sizeof(floating))


cdef void backward_pass(const BackwardPass* p, floating* da) noexcept nogil:
    """BPTT as BackwardPass describes it (rnnfast/_kernels/passes.pxd), da its scratch, typed:
    dx (unless NULL), dh0, db (unless NULL) and, unless dW_xh is NULL, dW_xh and dW_hh; dx in
    row ranges and dW_hh, dW_xh in ranges of their rows on the team with product_threads > 1.

    dh_n reaches each sequence at its last step (active as in forward_pass). h0 is the initial
    state used forward (zeros when the caller had none: its term in dW_hh is still computed,
    so an infinite gradient times a zero state gives NaN, exactly as in the reference).
    A leaky pass (leak not NULL) reads act(a_t) from act and uses carry (B, H) as scratch:
    da_t = leak dL/dh_t act'(a_t), and dL/dh_{t-1} gets (1 - leak) dL/dh_t besides W_hh^T da_t.
    """
    cdef Py_ssize_t T = p.T, B = p.B, D = p.D, H = p.H, ldm = p.ldm
    cdef const floating* W_hh = <const floating*>p.W_hh
    cdef const floating* M
    cdef floating* dh0 = <floating*>p.dh0
    cdef const floating* alpha = <const floating*>p.leak
    cdef ProductTasks c
    # the backward step right-multiplies by W_hh
    M = step_matrix(W_hh, H, <floating*>p.M, &ldm, False, p.use_blas, p.own_gemm,
                    aligned_for(p.align_steps, p.n_threads, B * H * H, True,
                                floating is double), False)
    backward_loop(da, <const floating*>p.dout, <const floating*>p.act,
                  <const floating*>p.dh_n, T, B, H, M, ldm, p.active,
                  BACKWARD_RELU if p.relu else BACKWARD_TANH, p.use_blas, p.own_gemm,
                  p.n_threads,
                  <floating*>p.norms, p.squares, alpha, <floating*>p.carry, dh0, p.alternate)
    c.is_double, c.backward, c.da = floating is double, p, da
    if p.dx != NULL:
        c.panels = product_panels(<const floating*>p.W_xh, D, H, p.product_matrix, False)
        run_pieces(&c, T * B, 16, p.product_threads, T * B * D * H, True, ROW_PRODUCTS,
                   dx_task, dx_pieces)
    if p.dW_hh != NULL:  # one range of [dW_hh; dW_xh]'s rows per thread
        c.extent = p.product_threads
        if c.extent > 1:
            team_run(p.product_threads, 1, c.extent,
                     step_kind(T * B * H * (D + H), True, c.is_double, LAYER_PRODUCTS),
                     weight_grads_task, weight_grads_pieces, &c)
        else:
            weight_grads_pieces(&c, 0)
    if p.db != NULL:
        bias_grad(p, da)
    if alpha == NULL:
        any_gemm(False, False, B, H, H, 1, da, H, W_hh, H, 0, dh0, H)  # dh0 = da[0] @ W_hh
    else:  # dh0 holds (1 - leak) dL/dh_0 from the loop
        any_gemm(False, False, B, H, H, 1, da, H, W_hh, H, 1, dh0, H)  # dh0 += da[0] @ W_hh


cdef void matmul_f32(const MatmulPass* p) noexcept nogil:
    matmul_pass(p, False)


cdef void matmul_f64(const MatmulPass* p) noexcept nogil:
    matmul_pass(p, True)


cdef void softmax_f32(const SoftmaxPass* p) noexcept nogil:
    softmax_pass(p, False)


cdef void softmax_f64(const SoftmaxPass* p) noexcept nogil:
    softmax_pass(p, True)


cdef void forward_f32(const ForwardPass* p) noexcept nogil:
    forward_pass(p, <float*>p.out)


cdef void forward_f64(const ForwardPass* p) noexcept nogil:
    forward_pass(p, <double*>p.out)


cdef void backward_f32(const BackwardPass* p) noexcept nogil:
    backward_pass(p, <float*>p.da)


cdef void backward_f64(const BackwardPass* p) noexcept nogil:
    backward_pass(p, <double*>p.da)


cdef KernelTable TABLE
TABLE.forward_f32 = forward_f32
TABLE.forward_f64 = forward_f64
TABLE.backward_f32 = backward_f32
TABLE.backward_f64 = backward_f64
TABLE.matmul_f32 = matmul_f32
TABLE.matmul_f64 = matmul_f64
TABLE.softmax_f32 = softmax_f32
TABLE.softmax_f64 = softmax_f64
TABLE.block_bytes = BLOCK_BYTES
TABLE.natural = NATURAL_LAYOUT


def kernel_table():
    """This build's passes as a PyCapsule named "rnnfast.KernelTable" holding a pointer to its
    KernelTable (rnnfast/_kernels/passes.pxd), for the compiled entry to call."""
    return PyCapsule_New(&TABLE, b"rnnfast.KernelTable", NULL)


def team_statistics():
    """The thread team of this build so far (team.h): (long waits for a descheduled worker,
    each followed by a time on one thread; tasks the workers ran; workers started)."""
    cdef long long late_waits, tasks_by_workers
    cdef int workers
    team_stats(&late_waits, &tasks_by_workers, &workers)
    return late_waits, tasks_by_workers, workers


TEAM_MODES = ("adapt", "always", "never")


def reset_team(mode="adapt"):
    """Forget the team's timings and descheduled workers (team.h), and run threaded steps
    from now on as ``mode`` says: "adapt" (the team where it is measured to pay), "always" on
    the team, or "never" (every step by the calling thread alone, in one go)."""
    if mode not in TEAM_MODES:
        raise ValueError(f"mode must be one of {', '.join(TEAM_MODES)}; got {mode!r}")
    team_reset(TEAM_MODES.index(mode))
