"""Triton kernels and their host launchers (see DESIGN.md section 2)."""
