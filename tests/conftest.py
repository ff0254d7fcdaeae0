"""Test-session settings shared by every test folder.

CI runs ``pytest -n 2`` on a 2-core machine: two worker processes, each with torch's default of one
intra-op thread per core, oversubscribe the CPU and make small 3D convolutions many times slower (measured:
a tiny backward pass 6.2 s with 2 threads vs 0.3 s with 1 on the loaded 2-core VM). One thread per worker.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass
