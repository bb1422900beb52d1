"""Evaluation of kernel maps over input batches: validation, tiling, symmetry, outputs."""
