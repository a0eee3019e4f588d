"""Large host allocations reused (vscjax.host_memory): a 40 MiB buffer made and freed again and
again faults its pages in once, not at every allocation; counted in fresh processes, since the
setting holds for the whole process."""

import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, resource, sys
from vscjax import host_memory
if sys.argv[1] == "reuse":
    assert host_memory.reuse_large_allocations()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 40 * 2**20

def use_and_free():  # as XLA's CPU runtime does with a step's temporaries
    buffer = libc.malloc(size)
    ctypes.memset(buffer, 1, size)
    libc.free(buffer)

use_and_free()  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    use_and_free()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def _faults_per_allocation(mode):
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return float(done.stdout)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt: Linux only")
def test_a_large_buffer_is_reused_instead_of_mapped_afresh():
    pages = 40 * 2**20 // 4096
    assert _faults_per_allocation("fresh") > 0.9 * pages
    assert _faults_per_allocation("reuse") < 0.01 * pages
