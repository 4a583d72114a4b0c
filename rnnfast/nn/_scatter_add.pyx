"""The embedding's gradient (rnnfast/nn/embedding.py): a scatter-add of rows, in compiled loops.

One pass over the rows in their order, each added to the row of the table its id names: every
row of the result sums its rows in the order of i, as np.add.at does, so the bits are
np.add.at's. Measured here on 2048 rows of 64 floats (`rnnfast train`'s chunk): 16 us, against
82 us through a sparse one-hot product (argsort, CSR arrays, SciPy's product; 0.5 ms inside a
training step, where it starts cold) and 1.1 ms through np.add.at.
"""
from cython cimport floating


def scatter_add_rows(const Py_ssize_t[::1] ids, const floating[:, ::1] rows,
                     floating[:, ::1] out):
    """out[ids[i], :] += rows[i, :] for i = 0 .. len(ids) - 1, in that order.

    The caller checks everything first: len(ids) == rows.shape[0], rows.shape[1] ==
    out.shape[1], and every id in [0, out.shape[0]) (the kernel indexes by them unchecked).
    """
    cdef Py_ssize_t n = rows.shape[0], width = rows.shape[1], i, k
    cdef floating* target
    cdef const floating* row
    if n == 0 or width == 0:
        return
    with nogil:
        for i in range(n):
            target = &out[ids[i], 0]
            row = &rows[i, 0]
            for k in range(width):
                target[k] += row[k]
