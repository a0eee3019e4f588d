"""JAX's threefry unrolled on CPUs (vscjax.cpu_random): the same bits as JAX's own looped
lowering, and no loop left in the compiled draw; checked in a fresh process, since the lowering
is chosen for the whole process."""

import os
import subprocess
import sys

SCRIPT = """
import jax, numpy as np
from vscjax import cpu_random

def draws(key):  # the [B, L] noise of a training step
    return jax.random.uniform(key, (16, 300)), jax.random.normal(jax.random.fold_in(key, 1), (16, 300))

key = jax.random.key(3)
looped = jax.jit(draws).lower(key).compile()
assert "while" in looped.as_text()
before = [np.asarray(x) for x in looped(key)]
assert cpu_random.unroll_threefry()
unrolled = jax.jit(lambda k: draws(k)).lower(key).compile()
assert "while" not in unrolled.as_text()
after = [np.asarray(x) for x in unrolled(key)]
assert all(np.array_equal(a.view(np.uint32), b.view(np.uint32)) for a, b in zip(before, after))
print("ok")
"""


def test_unrolled_threefry_draws_the_same_bits_without_a_loop():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
