"""Building generated modules against kernels (Kbuild)."""
