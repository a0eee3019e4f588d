"""vscjax: Variational Sparse Coding and class-aware VSC in JAX / Flax NNX.

``vscjax.load(workdir)`` returns the trained model of a train.py workdir
(:func:`vscjax.trained.load`, :class:`vscjax.trained.TrainedModel`).
"""

__version__ = "0.1.0"
__all__ = ["TrainedModel", "load"]


def __getattr__(name: str):
    """``load`` and ``TrainedModel``, imported on first use: ``import vscjax`` alone loads no JAX."""
    if name in __all__:
        from vscjax import trained

        return getattr(trained, name)
    raise AttributeError(f"module 'vscjax' has no attribute {name!r}")
