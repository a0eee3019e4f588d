"""JAX's threefry random bits on CPUs without the loop: the same bits, one fused pass.

On CPUs JAX lowers its threefry2x32 hash as a loop of five steps (smaller programs, faster
compiles), and XLA then writes and reads the counters of every draw five times over: for the
[B, L] uniform and normal draws of a training step that is more memory traffic than the slab
and spike terms together (``benchmarks.throughput --instructions``). Every other platform
gets the unrolled lowering, which XLA fuses into the consumer of the bits.
:func:`unroll_threefry` gives CPUs that lowering too. It changes how the hash is computed,
not what it computes: the bits, and so every run and its resume, stay exactly the same.
"""

from __future__ import annotations


def unroll_threefry() -> bool:
    """Lower JAX's threefry2x32 unrolled on CPUs in this process (for programs compiled from
    now on). Returns False, changing nothing, where this JAX has no such lowering rule."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32
    except ImportError:
        return False
    rule = getattr(threefry2x32, "_threefry2x32_lowering_rule", None)
    if rule is None:
        return False
    mlir.register_lowering(threefry2x32.threefry2x32_p, rule, platform="cpu")
    return True
