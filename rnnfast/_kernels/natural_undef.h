/* Ends one inclusion of natural.h's bodies: undefines the element type, the vector type and
 * its operations that natural.h defined for it (no include guard: included after each). */
#undef RNNFAST_T
#undef RNNFAST_NAME
#undef RNNFAST_V
#undef RNNFAST_L
#undef RNNFAST_MASK_T
#undef RNNFAST_MASK
#undef RNNFAST_LOAD
#undef RNNFAST_STORE
#undef RNNFAST_MASKLOAD
#undef RNNFAST_MASKSTORE
#undef RNNFAST_FMA
#undef RNNFAST_ZERO
#undef RNNFAST_SPLAT
#undef RNNFAST_REDUCE4
