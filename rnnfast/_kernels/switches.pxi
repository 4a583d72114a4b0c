# The measured switches between the kernels' paths (included by entry.pyx): which step kernel
# a pass runs (the small-step kernel, our GEMM or SciPy's BLAS), on how many threads, where
# its products go. One instance, ``switches``, read by every call; tests set it to force a
# path.

cdef class Switches:
    """The measured switches between the kernels' paths: one instance, ``switches``, read by
    every call. Attributes can be set (tests force paths with them); measured values:

    blas_min_batch_float32 = 32, blas_min_batch_float64 = 16
    small_steps_max_batch = 3, small_steps_max_hidden = 8, large_steps_min_steps = 10
    two_row_steps_min_hidden = 64, two_row_steps_max_hidden = 128
    l2_cache_bytes = one core's L2 (rnnfast/utils/caches.py: sysfs; 1 MiB if unknown)
        The step kernel: steps of blas_min_batch_* rows or more are large steps (our GEMM or
        SciPy's BLAS, see gemm_min_hidden), and so are those of a pass of at least
        large_steps_min_steps steps of more than small_steps_max_batch rows of more than
        small_steps_max_hidden units, or of two rows of two_row_steps_min_hidden to
        two_row_steps_max_hidden units (below gemm_min_hidden: on BLAS); the others
        run on the small-step kernel (rnnfast/_kernels/natural.h), except that steps that
        would stream a W_hh larger than the L2 cache more than once are large steps (it reads
        W_hh once per group of rows: natural.h groups 3 rows, the panel kernels 6, 4, 2, 1).
        From blas_min_batch_* rows (one thread, B = 1..64, H = 32..512, an earlier measurement)
        BLAS's or our GEMM's steps won whatever T. Below, measured on this project's 2-core AMD
        EPYC (Zen 4, AVX-512 build), whole forward + backward passes, D = H, interleaved: at
        T = 50, H = 16..512, the small-step kernel was the fastest at B = 1 and 3; at B = 2
        within 0-9% of the fastest in float32 (14-18% in float64) and the fastest on two threads
        (100,2,256,256 float64: 0.90x our GEMM's time); from B = 4 on it lost by 2-25% in both
        dtypes (B = 4, 8, 12: 1.17-1.24x at H = 64-256: its groups of 3 rows forward and 6
        backward leave a row or two that read W_hh again), on two threads by 15-29% to our GEMM
        on the team (float32 B = 4-16, H = 256-512) and by 5-16% to BLAS's steps on one thread
        at H = 64-128 (float64 100,12,64,64 the exception: 0.86x). It stays the fastest at
        H <= 8 (by 15-45%, BLAS's calls cost more than such steps), and in short passes, where
        the large steps' costs per pass (W_hh packed, the products on BLAS) are not repaid:
        10-65% faster at T = 1 and 3 (B = 4-16, H = 64-512); at T = 10 and 20 the large steps
        won by 0-16%.
        On an Intel Xeon with AVX-512 and 2 MiB of L2 (Sapphire Rapids class), measured the
        same way (T = 10-200, D = 8-128): at B = 2, BLAS's steps ran 1.12-1.41x faster than
        the small-step kernel at H = 64-128 but 1.0-1.4x slower from H = 192 on (4.3x at H =
        768), hence two_row_steps_*; below H = 64 the small-step kernel won short passes (T =
        10, H = 24-40: 1.2-1.36x). At B = 3 the small-step kernel was 1.15-1.45x faster than
        BLAS or our GEMM at H = 128-1024 (W_hh up to 4 MiB; 1.16x slower at H = 64).
    threads_min_step_flops = 2**17
        Small steps go to the thread team (team.h) only from this many multiply-adds
        (B * H * H) up: below, a step (under ~5 us) is too short for a second core to save
        more than the claims and the wait at its end cost. The team then decides, from the
        steps' timings, whether its threads pay (see kernel_threads).
    own_products_max_bytes = 2**19, own_products_max_macs = 2**14
        The input projection and dx of a small-step pass run on the step kernels (natural.h,
        no BLAS call) for a W_xh of at most own_products_max_bytes and products (T * B * D * H)
        of fewer than own_products_max_macs multiply-adds; larger ones on BLAS. On the Xeon
        above, whole passes (one core, interleaved, the step kernels against BLAS for the
        products): BLAS 1.0-1.19x faster from 2 * 10^4 multiply-adds (20,2,16,32 tied;
        25,1,65,100 1.06-1.08x, 100,3,128,128 1.12-1.16x, 30,3,512,64 1.17-1.19x), the step
        kernels 1.06-1.31x faster below (10,1,8,32, 10,4,1,8, 10,1,1,128; there BLAS's place
        is taken by plain loops up to 4096 multiply-adds).
    threads_min_product_flops = 2**21
        A pass's input projection (forward) and dx (backward) are shared among n_threads of
        the team as row ranges, a few per thread, from this many multiply-adds (T * B * D * H,
        about 15 us on one core), and dW_xh and dW_hh are computed side by side (in the pass,
        also in float32: see numpy_weight_grads_min_flops).
    own_gemm_products = True
        Those ranges run on our GEMM over W_xh packed once per pass (gemm.h), where each
        element comes out the same whatever the range: the bits then depend on whether
        n_threads is 1 (one BLAS call) or more, not on the thread count or on who ran which
        range, and a range costs what its rows do. Each range on BLAS instead (False, or in
        builds whose step kernels read W_xh as it is, for the small W_xh they take) repacks
        W_xh: measured one core, 8 ranges of 40-80 rows ran 1.3-1.7x one call (320-640 rows,
        H = D = 256-512), and when the team measured that it did not pay, two threads ran
        passes up to 1.29x slower than one (bench/test_bench_threads.py); on our GEMM
        that is 1.00-1.07x, the rest from dW_xh and dW_hh on SciPy's BLAS.
    gemm_products_max_bytes = 2**19, blas_products_min_rows = 1280
        Our GEMM takes the ranges of a W_xh of at most gemm_products_max_bytes. A larger one
        (H = D = 512 float32) costs more there than BLAS's one call (packing 1 MiB, and
        K = 512 runs slower on our tiles: 1.05-1.09x alone, T * B = 40 to 2560), and in
        ranges on BLAS 1.2x at 40 rows, 1.02-1.04x from 1280 rows: so it is shared only from
        blas_products_min_rows rows, on BLAS.
    openblas_single_thread_mnk = 65536 * 4
        Inside a pass BLAS runs on one thread: OpenBLAS wakes its workers for every GEMM,
        which cost more than they gave back here (2-5x slower at 1000,1,16,64), and they must
        not spin on the cores of the kernel's own threads. OpenBLAS itself keeps a GEMM with
        M * N * K up to 65536 * GEMM_MULTITHREAD_THRESHOLD (4, its default) on one thread:
        passes whose GEMMs are all that small skip the thread-count calls.
    numpy_weight_grads_min_flops = 2**20
        From this many multiply-adds (T * B * H * (D + H)) on, the float32 weight gradients go
        to NumPy's BLAS after the pass: the OpenBLAS that NumPy ships ran these transposed
        GEMMs (da^T @ x) 1.16-1.47x faster than SciPy's here in float32 (0.3.31 against
        0.3.30; T*B, H, D from 100, 128, 128 to 3200, 512, 512), which repays NumPy's few
        microseconds per call; in float64 both ran alike (0.89-1.02x), so float64 keeps them
        in the kernel's call, and so do passes whose products are on the team, from
        team_weight_grads_min_hidden = 128 on (there dW_hh and dW_xh run in ranges of their
        rows, one per thread, of equal work, on NumPy's OpenBLAS too where numpy_blas.py
        finds it; NumPy's one call, which the pass on two threads must match when the team
        does not pay, ran 0.87-0.94x of SciPy's from H = 128 but 0.74x at H = 64: T * B =
        4096, D = H; on Python threads side by side instead, which do not adapt as the team
        does, a pass on two threads ran up to 1.26x slower than on one beside other pools).
        They stay on one BLAS thread whatever n_threads: OpenBLAS's threads, which wait for
        each other spinning, collapsed when another process or pool held a core
        (610,1,128,128 forward+backward: 25 ms on two BLAS threads against 8-11 ms on one,
        on this machine shared with other jobs).
    cores
        The cores this process may run on, read once at import (threads beyond them would
        make every step's barrier wait for a descheduled thread).
    own_gemm = True, gemm_min_hidden = 256
    gemm_max_hidden_float64 = 512 where l2_cache_bytes < 2 MiB, else no limit
        Large steps (the ones small_steps_max_batch sends off the small-step kernel) run on
        rnnfast's packed GEMM (gemm.h: W_hh packed once per pass, each group of rows finished
        right after its products) rather than on SciPy's BLAS from H = gemm_min_hidden on
        (float64: up to gemm_max_hidden_float64), on any thread count (the steps' bits do not
        depend on it); own_gemm False gives them all to BLAS. Below it, at B = 4-24 too,
        BLAS's steps ran 0-4% faster than ours on one thread (H = 64-128). The float64 limit
        is the Zen 4's (1 MiB of L2, below); on the 2 MiB Xeon above, whole passes (T = 20,
        D = 128) ran 1.04-1.50x faster on our GEMM than on BLAS at H = 640-1024, B = 4-64
        (tied at B = 128).
        Measured with bench/step_gemm.py (AVX-512 build, one core, CPU time, T = 20 steps of
        the forward and of the backward time loop, GFLOP/s ours / BLAS step): float32 H = 256
        to 1024 1.15-1.3x forward, 1.0-1.2x backward; H = 128 0.85x, H = 64 0.9-1.0x (small K:
        OpenBLAS's small-matrix kernels win there); float64 H = 256-512 1.0-1.15x forward,
        0.95x backward, H = 1024 0.85-0.9x.
    align_steps_min_steps = 8
    l1_cache_bytes = one core's L1 data cache (rnnfast/utils/caches.py; 32 KiB if unknown)
        The small-step kernel reads W_hh from a copy whose rows start on cache lines (made once
        per pass, rows padded to whole lines) in passes of at least align_steps_min_steps steps
        with a W_hh of at most l2_cache_bytes, unless W_hh's rows are so already, or the copy
        would not fit in 3/4 of the L1 cache that W_hh fits in: a vector load that spans two
        lines costs two, and NumPy's arrays may start 16 bytes into a line, their rows anywhere
        with H * itemsize bytes. On the Xeon above (48 KiB of L1; T = 100, B = 1, W_hh 16
        bytes into a line) passes ran 1.12-1.14x faster at H = 48-80 and 1.28-1.31x at H =
        112-128 float32, but 0.88-1.02x at H = 100 (39 KiB padded to 44) and 0.89x at T = 4;
        beyond L2, 10,1,512,1024 ran 0.89x (the copy streams 4 MiB twice a call). A pass on
        the team copies only while the team runs its steps on the calling thread alone (see
        aligned_for in recurrence_impl.pxi).
    transposed_steps_min_steps = 10
        A forward pass of at least this many small steps, and at least H / 8 rows in all
        (T * B; in builds that read W_hh as it is, with a W_hh of at most l2_cache_bytes),
        runs them on W_hh^T, transposed once per pass into scratch on cache lines, as the
        backward's run on W_hh: rows of it scaled and added up (no sums across the lanes of a
        vector, and 512-bit vectors where the build has them), 1.2-1.7x faster per step than the dot products on W_hh at B = 1-3, H = 32-512
        (float32, one core). Whole forward + backward passes on the Xeon above (one core,
        W_hh 16 bytes into a line): 1.04-1.11x faster at T = 16-1000 (float32 and float64,
        B = 1-4, H = 8-300), 1.03x at T = 10, tied at T = 8 (B = 1), slower at T = 2-4
        (0.83-0.95x: the transposition is not repaid). The transposition's cost per element
        grows with H (0.11 ns at H = 100, 0.2 at 512, L2's misses) while a step's gain is B
        rows': at 12,2,512,512 the forward ran 1.05-1.2x slower on one thread, 1.4x on two
        (whose second core reads the copy from the first's cache); at 38-40,1,512,512 it tied
        hot and lost by ~5% in passes between other work, hence T * B >= H / 8.
        The choice does not depend on the thread count: it changes the rounding.
    forced_step : None, "small", "blas" or "gemm"
        Every step on that kernel (tests): the small-step kernel, SciPy's BLAS or our GEMM;
        "blas" also keeps the steps on one thread.
    build : str
        The kernel build the passes run (a key of rnnfast._kernels.builds.KERNEL_BUILDS).
    """

    cdef public Py_ssize_t small_steps_max_batch, small_steps_max_hidden, large_steps_min_steps
    cdef public Py_ssize_t two_row_steps_min_hidden, two_row_steps_max_hidden
    cdef public Py_ssize_t blas_min_batch_float32, blas_min_batch_float64, l2_cache_bytes
    cdef public Py_ssize_t threads_min_step_flops, threads_min_product_flops
    cdef public Py_ssize_t openblas_single_thread_mnk
    cdef public Py_ssize_t numpy_weight_grads_min_flops, team_weight_grads_min_hidden
    cdef public Py_ssize_t own_products_max_bytes, own_products_max_macs
    cdef public int cores
    cdef public bint own_gemm, own_gemm_products
    cdef public Py_ssize_t gemm_products_max_bytes, blas_products_min_rows
    cdef public Py_ssize_t gemm_min_hidden, gemm_max_hidden_float64
    cdef public Py_ssize_t align_steps_min_steps, l1_cache_bytes
    cdef public Py_ssize_t transposed_steps_min_steps
    cdef readonly Py_ssize_t passes  # passes run so far (every thread's)
    cdef object last_step  # how the last pass ran (last_pass)
    cdef int last_threads
    cdef int forced  # -1: none, 0: small, 1: blas, 2: gemm
    cdef object build_name
    cdef const KernelTable* table

    def __init__(self):
        self.small_steps_max_batch, self.small_steps_max_hidden = 3, 8
        self.large_steps_min_steps = 10
        self.two_row_steps_min_hidden, self.two_row_steps_max_hidden = 64, 128
        self.blas_min_batch_float32, self.blas_min_batch_float64 = 32, 16
        self.l2_cache_bytes = l2_cache_bytes()
        self.threads_min_step_flops = 1 << 17
        self.threads_min_product_flops = 1 << 21
        self.openblas_single_thread_mnk = 65536 * 4
        self.numpy_weight_grads_min_flops = 1 << 20
        self.team_weight_grads_min_hidden = 128
        self.own_products_max_bytes, self.own_products_max_macs = 1 << 19, 1 << 14
        self.cores = available_cores()
        self.own_gemm = True
        self.own_gemm_products = True
        self.gemm_products_max_bytes = GEMM_PRODUCTS_MAX_BYTES  # (the memory checks' bound)
        self.blas_products_min_rows = 1280
        self.gemm_min_hidden = 256
        self.gemm_max_hidden_float64 = 512 if self.l2_cache_bytes < (2 << 20) else 1 << 62
        self.align_steps_min_steps = 8
        self.transposed_steps_min_steps = 10
        self.l1_cache_bytes = l1_data_cache_bytes()
        self.forced = -1
        self.build = KERNEL

    @property
    def forced_step(self):
        return FORCED_STEPS[self.forced + 1]

    @forced_step.setter
    def forced_step(self, step):
        if step not in FORCED_STEPS:
            raise ValueError(f"forced_step must be None, 'small', 'blas' or 'gemm'; got {step!r}")
        self.forced = FORCED_STEPS.index(step) - 1

    @property
    def build(self):
        return self.build_name

    @build.setter
    def build(self, name):
        if name not in KERNEL_BUILDS:
            raise ValueError(f"build must be one of {', '.join(KERNEL_BUILDS)}; got {name!r}")
        capsule = KERNEL_BUILDS[name].kernel_table()
        self.table = <const KernelTable*>PyCapsule_GetPointer(capsule, b"rnnfast.KernelTable")
        self.build_name = name

    @property
    def last_pass(self):
        """How the last pass of any thread ran: (build, "small", "blas" or "gemm", kernel
        threads)."""
        return self.build_name, self.last_step, self.last_threads

    @property
    def block_bytes(self):
        """The bytes of one micro-kernel column block in the build in use."""
        return self.table.block_bytes

    @property
    def natural_steps(self):
        """Whether the build in use runs small steps on W_hh as it is (natural.h), rather than
        on panels of it."""
        return bool(self.table.natural)


FORCED_STEPS = (None, "small", "blas", "gemm")
switches = Switches()


cdef inline Py_ssize_t passes_over_W_hh(bint natural, Py_ssize_t B) noexcept:
    """How often a small step of B rows reads W_hh: once per group of rows its kernels take
    (natural.h: forward 3 at a time, then the 2 or 1 left, the backward no more often; the
    panel kernels: 6, 4, 2, 1)."""
    if natural:
        return (B + 2) // 3
    return B // 6 + (B % 6) // 4 + (B % 6 % 4) // 2 + B % 2


cdef inline bint blas_steps(Switches s, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
                            Py_ssize_t itemsize) noexcept:
    """Whether the (B, H) steps of a pass of T steps are large steps (our GEMM or BLAS:
    gemm_steps) rather than the small-step kernel's."""
    if s.forced >= 0:
        return s.forced >= 1
    if B >= (s.blas_min_batch_float32 if itemsize == 4 else s.blas_min_batch_float64):
        return True
    if (H > s.small_steps_max_hidden and T >= s.large_steps_min_steps
            and (B > s.small_steps_max_batch
                 or (B == 2 and s.two_row_steps_min_hidden <= H
                     and H <= s.two_row_steps_max_hidden))):
        return True
    return passes_over_W_hh(s.table.natural, B) > 1 and H * H * itemsize > s.l2_cache_bytes


cdef inline bint gemm_steps(Switches s, bint large_steps, Py_ssize_t H,
                            Py_ssize_t itemsize) noexcept:
    """Whether the large steps of a pass run on our GEMM rather than SciPy's BLAS."""
    if not large_steps or s.forced == 1:
        return False
    return s.forced == 2 or (s.own_gemm and H >= s.gemm_min_hidden
                             and (itemsize == 4 or H <= s.gemm_max_hidden_float64))


cdef inline int kernel_threads(Switches s, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
                               Py_ssize_t itemsize, int n_threads) noexcept:
    """The threads of the time loop: n_threads (at most the cores) from threads_min_step_flops
    multiply-adds a step (B * H * H) on, for steps on the small-step kernel or on our GEMM;
    else 1. The team (team.h) then measures, step kind by step kind, whether its threads are
    faster than one and runs the steps alone when they are not, so two threads cost at most
    its few probes where they do not pay. Steps that go to SciPy's BLAS stay on its one
    thread: a threaded BLAS per step fought NumPy's BLAS workers for the cores
    (100,32,128,128 forward+backward took 43 ms on 2 threads against 17 ms on one)."""
    if n_threads > s.cores:
        n_threads = s.cores
    if n_threads <= 1 or B * H * H < s.threads_min_step_flops:
        return 1
    if blas_steps(s, T, B, H, itemsize) and not gemm_steps(s, True, H, itemsize):
        return 1
    return n_threads


cdef inline int product_threads(Switches s, Py_ssize_t rows, Py_ssize_t D, Py_ssize_t H,
                                Py_ssize_t itemsize, int n_threads) noexcept:
    """The threads that share a pass's input projection and dx (rows x D x H multiply-adds)
    in row ranges on the team: n_threads (at most the cores) from threads_min_product_flops
    on, for a W_xh beyond gemm_products_max_bytes only from blas_products_min_rows rows; else
    1 (one call)."""
    if n_threads > s.cores:
        n_threads = s.cores
    if n_threads <= 1 or rows * D * H < s.threads_min_product_flops:
        return 1
    if D * H * itemsize > s.gemm_products_max_bytes and rows < s.blas_products_min_rows:
        return 1
    return n_threads


cdef inline bint gemm_products(Switches s, Py_ssize_t D, Py_ssize_t H, Py_ssize_t itemsize,
                               int product_threads, bint own_products) noexcept:
    """Whether a pass's shared products run on our GEMM over W_xh in panels (else each range
    on BLAS)."""
    return (product_threads > 1 and not own_products and s.own_gemm_products
            and D * H * itemsize <= s.gemm_products_max_bytes)


cdef inline bint own_products(Switches s, bint blas_steps, Py_ssize_t rows, Py_ssize_t H,
                              Py_ssize_t D, Py_ssize_t itemsize) noexcept:
    """Whether the input projection (X @ W_xh.T) and dx (da @ W_xh) of a small-step pass (rows
    = T * B) go to the step kernels rather than BLAS: in builds whose step kernels read W as it
    is, for a W_xh of at most own_products_max_bytes (a tenth of its passes come from beyond
    L2) and products of fewer than own_products_max_macs multiply-adds."""
    return (s.table.natural and not blas_steps and s.forced < 1
            and H * D * itemsize <= s.own_products_max_bytes
            and rows * D * H < s.own_products_max_macs)


cdef inline bint alternate_steps(Switches s, Py_ssize_t H, Py_ssize_t itemsize) noexcept:
    """Whether a pass's small steps go through W_hh one way, then the other (small_step): for
    a W_hh larger than the L2 cache, so that each step starts on what the one before read last,
    still in L2 (one core, alternating processes, forward + backward: 1.05-1.18x at
    50,3,128,768 and 10,1,512,1024, 1.18-1.31x at 30,2,64,900; with W_hh in L2, 256 KiB to
    1 MiB, no gain beyond the noise of such runs, 0.92-1.05x, so such passes keep one order)."""
    return H * H * itemsize > s.l2_cache_bytes


cdef inline bint align_steps(Switches s, Py_ssize_t T, Py_ssize_t H,
                             Py_ssize_t itemsize) noexcept:
    """Whether a pass's small steps read a copy of W_hh on cache lines (see step_matrix, which
    pads its rows to whole lines); the same bits either way."""
    cdef Py_ssize_t size = H * H * itemsize
    cdef Py_ssize_t padded = H * ((H * itemsize + 63) // 64 * 64)  # rows of whole lines
    if T < s.align_steps_min_steps or size > s.l2_cache_bytes:
        return False
    return size > s.l1_cache_bytes or 4 * padded <= 3 * s.l1_cache_bytes


cdef inline bint transposed_steps(Switches s, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
                                  Py_ssize_t itemsize) noexcept:
    """Whether a forward pass's small steps run on W_hh^T as the backward's do (step_matrix).
    Not on the thread count: it sets the bits."""
    return (s.table.natural and T >= s.transposed_steps_min_steps
            and 8 * T * B >= H and H * H * itemsize <= s.l2_cache_bytes)


def transposed_small_steps(T, B, H, dtype):
    """Whether the forward small steps of a pass of T steps of B rows in dtype run on a copy
    of W_hh^T (H, H), as the backward's run on W_hh."""
    return transposed_steps(switches, T, B, H, np.dtype(dtype).itemsize)


def align_small_steps(T, H, dtype):
    """Whether the small steps of a pass of T steps in dtype read a copy of W_hh (H, H) whose
    rows start on cache lines (unless W_hh's do already; on the team, only while it runs them
    on the calling thread alone)."""
    return align_steps(switches, T, H, np.dtype(dtype).itemsize)


def use_blas(T, B, H, dtype):
    """Whether the (B, H) steps of a pass of T steps in dtype are large steps (our GEMM or
    BLAS) rather than the small-step kernel's."""
    return blas_steps(switches, T, B, H, np.dtype(dtype).itemsize)


def step_plan(T, B, H, dtype, n_threads):
    """How the (B, H) steps of a pass of T steps run: (use_blas, kernel_threads)."""
    threads = kernel_threads(switches, T, B, H, np.dtype(dtype).itemsize, n_threads)
    return use_blas(T, B, H, dtype), threads
