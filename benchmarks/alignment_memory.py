"""Peak extra memory of the alignment losses' value-and-gradient, from XLA's buffer assignment.

    python -m benchmarks.alignment_memory --batch 512 --latent 16384

Prints the compiled temporary memory of ``jax.value_and_grad`` of each mode on the default
device, next to the size of one [B, B, L] float32 array that a naive pairwise loss builds.
Compilation only: nothing is run, so the numbers do not depend on machine load.
"""

import argparse

import jax
import jax.numpy as jnp

from vscjax import alignment


def temp_bytes(mode: str, batch: int, latent: int, num_classes: int) -> int:
    """XLA's temporary-buffer bytes for the loss's value and gradient at this size."""
    logit = jax.ShapeDtypeStruct((batch, latent), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    step = jax.jit(
        jax.value_and_grad(lambda s, y: alignment.class_alignment_loss(s, y, num_classes, mode=mode))
    )
    return step.lower(logit, labels).compile().memory_analysis().temp_size_in_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--latent", type=int, default=16384)
    parser.add_argument("--num-classes", type=int, default=10)
    args = parser.parse_args()
    mib = 2**20
    b, latent = args.batch, args.latent
    print(f"B={b} L={latent} C={args.num_classes} device={jax.devices()[0].device_kind}")
    print(f"  one [B, L] float32 array:     {b * latent * 4 / mib:10.1f} MiB")
    print(f"  one [B, B, L] float32 array:  {b * b * latent * 4 / mib:10.1f} MiB")
    for mode in alignment.MODES:
        peak = temp_bytes(mode, b, latent, args.num_classes)
        print(f"  {mode:9s} value+grad temp: {peak / mib:10.1f} MiB ({peak / (b * latent * 4):.1f} x [B, L])")


if __name__ == "__main__":
    main()
