from kernels.cpu import elementwise, im2col, pool  # noqa: F401
