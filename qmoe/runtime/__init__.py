"""Run an exported model (``.qmoe``) without torch: numpy and the compiled numba kernels."""
