"""vscjax: Variational Sparse Coding and class-aware VSC in JAX / Flax NNX."""

__version__ = "0.1.0"
