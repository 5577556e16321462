from kernels.cpu import conv_direct, elementwise, epilogue, im2col, pool, workspace  # noqa: F401
