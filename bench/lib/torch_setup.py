"""What bench's PyTorch peers do before torch loads: their common flags, and the thread pools.

``bench/engine-cpu/torch_step.py`` and ``bench/methods-cpu/torch_mixture_step.py`` parse their
command line with these flags, then call ``start_torch(threads)`` before anything imports torch
(``torch_common`` included): OpenBLAS and OpenMP size their pools when they load.

Threads: torch.set_num_threads(--threads) and torch.set_num_interop_threads(1). Debian's torch
does its matmuls in OpenBLAS, which keeps its own thread pool and is not governed by
torch.set_num_threads, so OMP_NUM_THREADS, OPENBLAS_NUM_THREADS (and MKL_NUM_THREADS) are set
to --threads before torch is imported.
"""

import os
import sys


def add_model_args(p):
    """The model's sizes; the defaults are the benchmark's (bench/lib/common.mjs, FULL_MODEL)."""
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1408)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)


def add_run_args(p, lr=1e-4, lr_help=None):
    """Threads, warm-up and timed steps, the seed and the learning rate."""
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=lr, help=lr_help)


def add_rope_norm_args(p):
    """RoPE's theta and RMSNorm's epsilon (Llama's)."""
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--rms-eps", type=float, default=1e-5)


def check_run_args(p, a):
    if a.threads < 1 or a.iters < 1 or a.warmup < 0 or a.seq < 2:
        p.error("need --threads >= 1, --iters >= 1, --warmup >= 0, --seq >= 2")


def start_torch(threads):
    """Sizes the thread pools, imports torch (exit status 2 when it cannot) and sets its threads."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import torch
    except ImportError:
        sys.stderr.write(
            "%s: cannot import torch with %s.\n"
            "Install Debian's package (apt-get install -y python3-torch) and run this script "
            "with /usr/bin/python3.\n" % (os.path.basename(sys.argv[0]), sys.executable)
        )
        sys.exit(2)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return torch
