"""With `keep_freed_memory`, activations of a prefill run reuse freed memory: a fresh process
allocating and freeing 6 MB blocks in a prefill's pattern takes almost no new pages, where glibc's
defaults can fault tens of thousands in (each page zeroed by the kernel as the product writes it)."""

import subprocess
import sys

import pytest

from tasks.backends.engine.allocator import keep_freed_memory

FAULTS = """
import resource, sys, torch
from tasks.backends.engine.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.set_num_threads(1)  # every page written by this thread, whose faults are counted

def prefill_layer():  # [1000, 1536] and [1000, 576] activations made and freed
    gate = torch.empty(1000, 1536).fill_(1)
    out = torch.empty(1000, 576).fill_(1)
    up = torch.empty(1000, 1536).fill_(1)
    del gate
    down = torch.empty(1000, 1536).fill_(1)
    del out, up, down

for _ in range(10):
    prefill_layer()
before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
for _ in range(20):
    prefill_layer()
print(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
"""


def faults(setting: str) -> int:
    done = subprocess.run([sys.executable, "-c", FAULTS, setting], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def test_freed_activations_are_reused_instead_of_faulted_in_anew():
    if not keep_freed_memory():
        pytest.skip("this C library has no mallopt (not glibc)")
    pages = 20 * (3 * 1536 + 576) * 1000 * 4 // 4096  # what the 20 layers write: ~101,000 pages
    # glibc's defaults faulted 0, 1,500 or 70,600 pages in here, from one run to the next (its
    # thresholds move with what the process freed before), so only the setting's side is asserted;
    # with it, 0 or 562 (one [1000, 576] block taken anew once)
    assert faults("keep") < pages // 50
