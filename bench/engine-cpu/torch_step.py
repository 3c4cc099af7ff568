#!/usr/bin/python3
"""PyTorch peer for the CPU engine benchmark: one LoRA training step of a Llama decoder.

This times "the same step in PyTorch (Debian's python3-torch, CPU, eager, same thread
count)" that the native engine's LoRA step is compared with.

Requirements
------------
Debian's PyTorch package (1.13.1 on bookworm), nothing else:

    apt-get update && apt-get install -y python3-torch

It installs for Debian's own interpreter, so run the script with ``/usr/bin/python3``
explicitly -- a ``python3`` found first on PATH (pyenv, venv, ...) will not see it:

    /usr/bin/python3 bench/engine-cpu/torch_step.py                 # benchmark defaults
    /usr/bin/python3 bench/engine-cpu/torch_step.py --threads 4 --iters 10
    /usr/bin/python3 bench/engine-cpu/torch_step.py --hidden 64 --layers 2 --vocab 256 \\
        --seq 32 --batch 2 --warmup 0 --iters 20 --lr 1e-2           # quick sanity check

Output: one JSON line on stdout (fields below), a human-readable summary on stderr.

What is computed (docs/engine.md)
---------------------------------
A Llama decoder written directly with torch ops (no ``transformers``):
embedding -> per layer [RMSNorm -> q,k,v projections (no bias) -> RoPE (HF rotate-half,
theta 10000, tables computed in float64 and rounded to float32) -> causal grouped-query
attention (query head h reads kv head h // (H/KV)) -> o_proj -> residual; RMSNorm ->
SwiGLU MLP (gate, up, down) -> residual] -> final RMSNorm -> untied lm_head -> mean
next-token cross-entropy (targets are the ids shifted left by one, the last position of
each row does not count, as in the engine's convention).

The base model is randomly initialised (normal, std 0.02; norm weights 1) and frozen
(requires_grad False). LoRA adapters sit on all 7 projections of every layer:
``y = x W^T + s * (x A^T) B^T``, ``s = alpha / r``, dropout 0. A is kaiming-uniform with
PEFT's bound 1/sqrt(in). B is NOT zero (as PEFT/the engine initialise it) but small random
values (normal, std 0.02): with B = 0 the dA gradient and the gradient flowing through the
adapters would be exactly zero. PyTorch performs the same matmuls either way, so this does
not change the FLOPs or the timing materially; it only makes the step do "real" work and the
loss curve meaningful from the first step.

Optimizer: torch.optim.AdamW(lr, weight_decay=0) over the LoRA parameters only.
One timed step = zero_grad, forward, loss.backward(), clip_grad_norm_(1.0), optimizer.step().
Everything is float32, eager mode, the way a typical PyTorch user writes it: attention is
matmul -> additive causal mask of -inf -> softmax in float32 -> matmul, with the kv heads
repeated (expand + reshape, as transformers' ``repeat_kv``) for GQA. (torch 1.13 has no
F.scaled_dot_product_attention.)

Threads: torch.set_num_threads(--threads) and torch.set_num_interop_threads(1). Debian's
torch does its matmuls in OpenBLAS, which keeps its own thread pool and is not governed by
torch.set_num_threads, so OMP_NUM_THREADS and OPENBLAS_NUM_THREADS are also set to
--threads before torch is imported, and the thread count OpenBLAS reports is printed.

BLAS and threading notes (measured on a 2-core AMD EPYC with AVX-512, Debian bookworm)
---------------------------------------------------------------------------------------
* torch.__config__.show() says BLAS_INFO=generic: Debian links the generic libblas.so.3,
  which the alternatives system points at OpenBLAS (0.3.21, pthreads build, DYNAMIC_ARCH).
  float32 matmuls (mm/addmm/bmm) go there; oneDNN is present but not used for them.
* OPENBLAS_CORETYPE overrides OpenBLAS's kernel choice. With OPENBLAS_CORETYPE=Haswell the
  AVX2 kernels run (about 195 GFLOP/s for a 2048^3 sgemm on 2 threads); unset, OpenBLAS picks
  its Cooperlake/AVX-512 kernels (about 350 GFLOP/s). Use the same value for every peer that
  links OpenBLAS; the core in use is reported in the JSON ("openblas.core").
* torch's elementwise ops run on libgomp (OpenMP) threads while matmuls run on OpenBLAS's own
  pthreads, so 2 + 2 threads share the cores and libgomp's spin-waiting steals time from
  OpenBLAS. OMP_WAIT_POLICY=PASSIVE (or GOMP_SPINCOUNT=0) made the default step about 1.8x
  faster on 2 cores. The script does not set it (a typical user would not); it reports it.

JSON fields
-----------
peer, torch_version (torch.__version__), torch_package (Debian package version), threads,
interop_threads, blas (from torch.__config__.show() and the library actually loaded),
env (those variables as the run saw them; the *_NUM_THREADS ones are set by the script),
openblas (what the loaded OpenBLAS reports: config, core kernel, threads; null if not found),
config (the model/run arguments), params_frozen, params_trainable,
step_seconds (each timed iteration), best_s, median_s, tokens_per_s (batch*seq / median_s),
loss_first (loss of the first step run, warm-up included), loss_last (of the last step),
losses (all steps, warm-up included),
flops_per_step, flops_per_step_torch, flops_breakdown, gflops_per_s (flops_per_step / median_s).

FLOP counts (2 FLOPs per multiply-add, matmuls only; norms, softmax, RoPE, the optimizer
and other elementwise work are not counted):
  * forward of every linear layer (base projections, LoRA A and B, lm_head);
  * the backward's input-gradient matmuls, for every tensor autograd actually needs a
    gradient of: the base weights are frozen and the embedding output does not require
    grad, so layer 0's q/k/v base projections and their LoRA-A input gradients are skipped
    (PyTorch skips them; the amount is given in the breakdown);
  * the LoRA weight-gradient matmuls (dA, dB); no base weight gradients (frozen);
  * attention QK^T and PV, forward (2 matmuls) and backward (4 matmuls).
``flops_per_step`` counts attention causally (T(T+1)/2 query-key pairs per head),
the work a causal-aware engine needs. ``flops_per_step_torch`` counts attention over the
full T x T score matrix, as eager PyTorch actually computes it (for information).
"""

import argparse
import json
import math
import os
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1408)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--rms-eps", type=float, default=1e-5)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    a = p.parse_args(argv)
    if a.hidden % a.heads != 0:
        p.error("--hidden must be divisible by --heads")
    if a.heads % a.kv_heads != 0:
        p.error("--heads must be divisible by --kv-heads")
    if (a.hidden // a.heads) % 2 != 0:
        p.error("head dim (hidden / heads) must be even for RoPE")
    if a.threads < 1 or a.iters < 1 or a.warmup < 0 or a.seq < 2:
        p.error("need --threads >= 1, --iters >= 1, --warmup >= 0, --seq >= 2")
    return a


ARGS = parse_args()

# Thread pools must be sized before torch (and the BLAS it loads) start.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    sys.stderr.write(
        "torch_step.py: cannot import torch with %s.\n"
        "Install Debian's package (apt-get install -y python3-torch) and run this script "
        "with /usr/bin/python3.\n" % sys.executable
    )
    sys.exit(2)

torch.set_num_threads(ARGS.threads)
torch.set_num_interop_threads(1)


# --------------------------------------------------------------------------- BLAS info


def blas_summary():
    """Short string for the BLAS torch was built against, from torch.__config__.show()."""
    cfg = torch.__config__.show()
    info = {}
    for line in cfg.splitlines():
        for part in line.replace(",", " ").split():
            if "=" in part:
                k, v = part.split("=", 1)
                info[k.strip()] = v.strip()
    names = {"open": "OpenBLAS", "mkl": "MKL", "accelerate": "Accelerate", "blis": "BLIS",
             "flexi": "FlexiBLAS", "atlas": "ATLAS", "generic": "generic BLAS"}
    blas = info.get("BLAS_INFO")
    s = names.get(blas, blas or "unknown")
    if blas == "generic":
        # Debian links the generic libblas.so.3 interface; the alternatives system picks the
        # implementation at run time (normally OpenBLAS). Name what is actually loaded.
        ob = openblas_runtime()
        if ob:
            s = "generic libblas.so.3 -> OpenBLAS %s" % " ".join(
                x for x in (ob.get("version"), ob.get("parallel"), ob.get("core")) if x)
        else:
            s = "generic libblas.so.3 (%s)" % (loaded_blas_paths() or ["?"])[0]
    extra = []
    if "LAPACK_INFO" in info:
        extra.append("LAPACK=" + names.get(info["LAPACK_INFO"], info["LAPACK_INFO"]))
    extra.append("MKL" if torch.backends.mkl.is_available() else "no MKL")
    extra.append("oneDNN" if torch.backends.mkldnn.is_available() else "no oneDNN")
    return "%s (%s)" % (s, ", ".join(extra))


def loaded_blas_paths():
    """Paths of BLAS-looking shared libraries mapped into this process."""
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split()
                path = fields[-1] if len(fields) >= 6 else ""
                base = os.path.basename(path)
                if ("openblas" in base or base.startswith("libblas.so")) and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    return paths


def openblas_runtime():
    """Ask the OpenBLAS library mapped into this process what it is doing, if there is one."""
    import ctypes

    for path in loaded_blas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if not hasattr(lib, "openblas_get_config"):
            continue
        out = {"library": os.path.realpath(path)}
        lib.openblas_get_config.restype = ctypes.c_char_p
        out["config"] = lib.openblas_get_config().decode(errors="replace").strip()
        words = out["config"].split()
        if len(words) >= 2 and words[0] == "OpenBLAS":
            out["version"] = words[1]
        if hasattr(lib, "openblas_get_corename"):
            lib.openblas_get_corename.restype = ctypes.c_char_p
            out["core"] = lib.openblas_get_corename().decode(errors="replace").strip()
        if hasattr(lib, "openblas_get_num_threads"):
            out["num_threads"] = lib.openblas_get_num_threads()
        if hasattr(lib, "openblas_get_parallel"):
            out["parallel"] = {0: "sequential", 1: "pthreads", 2: "openmp"}.get(
                lib.openblas_get_parallel(), "unknown")
        out["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
        return out
    return None


# Environment variables that change the timing a lot on a small machine; reported as given.
ENV_REPORTED = ("OPENBLAS_CORETYPE", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS",
                "OPENBLAS_NUM_THREADS", "OMP_PROC_BIND")


def debian_package_version(name):
    """Version of a Debian package (torch.__version__ says 1.13.0a0 for Debian's 1.13.1)."""
    import subprocess

    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------- model


class LoRALinear(nn.Module):
    """Frozen nn.Linear (no bias) plus a LoRA adapter: y = x W^T + s (x A^T) B^T."""

    def __init__(self, in_f, out_f, rank, alpha):
        super().__init__()
        self.base = nn.Linear(in_f, out_f, bias=False)
        self.base.weight.requires_grad_(False)
        self.lora_A = nn.Linear(in_f, rank, bias=False)
        self.lora_B = nn.Linear(rank, out_f, bias=False)
        self.scaling = alpha / rank
        self.in_f, self.out_f = in_f, out_f

    def reset_parameters(self):
        nn.init.normal_(self.base.weight, std=0.02)
        bound = 1.0 / math.sqrt(self.in_f)  # PEFT's kaiming_uniform_(a=sqrt(5)) bound
        nn.init.uniform_(self.lora_A.weight, -bound, bound)
        # Not zero (PEFT's default), see the module docstring; FLOPs are the same.
        nn.init.normal_(self.lora_B.weight, std=0.02)

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d), requires_grad=False)
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rope_tables(seq, hd, theta):
    """cos/sin [seq, hd] in the HF rotate-half layout; computed in float64, rounded once."""
    i = torch.arange(hd // 2, dtype=torch.float64)
    inv_freq = 1.0 / (theta ** (2.0 * i / hd))
    ang = torch.arange(seq, dtype=torch.float64)[:, None] * inv_freq[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().float(), ang.sin().float()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):  # x [B, heads, T, hd]; cos/sin [T, hd]
    return x * cos + rotate_half(x) * sin


def repeat_kv(x, n_rep):
    """[B, KV, T, hd] -> [B, KV*n_rep, T, hd]; head h reads kv head h // n_rep."""
    if n_rep == 1:
        return x
    b, kv, t, hd = x.shape
    return x[:, :, None, :, :].expand(b, kv, n_rep, t, hd).reshape(b, kv * n_rep, t, hd)


class Attention(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.h, self.kv = a.heads, a.kv_heads
        self.hd = a.hidden // a.heads
        d = a.hidden
        self.q_proj = LoRALinear(d, self.h * self.hd, a.rank, a.alpha)
        self.k_proj = LoRALinear(d, self.kv * self.hd, a.rank, a.alpha)
        self.v_proj = LoRALinear(d, self.kv * self.hd, a.rank, a.alpha)
        self.o_proj = LoRALinear(self.h * self.hd, d, a.rank, a.alpha)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k = repeat_kv(k, self.h // self.kv)
        v = repeat_kv(v, self.h // self.kv)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.hd)
        scores = scores + mask
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(probs, v)
        o = o.transpose(1, 2).reshape(b, t, self.h * self.hd)
        return self.o_proj(o)


class MLP(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.gate_proj = LoRALinear(a.hidden, a.intermediate, a.rank, a.alpha)
        self.up_proj = LoRALinear(a.hidden, a.intermediate, a.rank, a.alpha)
        self.down_proj = LoRALinear(a.intermediate, a.hidden, a.rank, a.alpha)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.input_layernorm = RMSNorm(a.hidden, a.rms_eps)
        self.self_attn = Attention(a)
        self.post_attention_layernorm = RMSNorm(a.hidden, a.rms_eps)
        self.mlp = MLP(a)

    def forward(self, h, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Llama(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab, a.hidden)
        self.layers = nn.ModuleList([Layer(a) for _ in range(a.layers)])
        self.norm = RMSNorm(a.hidden, a.rms_eps)
        self.lm_head = nn.Linear(a.hidden, a.vocab, bias=False)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        nn.init.normal_(self.lm_head.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, LoRALinear):
                m.reset_parameters()
        self.embed_tokens.weight.requires_grad_(False)
        self.lm_head.weight.requires_grad_(False)
        cos, sin = rope_tables(a.seq, a.hidden // a.heads, a.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        mask = torch.full((a.seq, a.seq), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, ids, targets):
        t = ids.shape[1]
        cos, sin, mask = self.cos[:t], self.sin[:t], self.mask[:t, :t]
        h = self.embed_tokens(ids)
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        logits = self.lm_head(self.norm(h))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1),
                               ignore_index=-100)


# --------------------------------------------------------------------------- FLOPs


def count_flops(a):
    """Analytic matmul FLOPs of one step as PyTorch runs it (see the module docstring)."""
    n = a.batch * a.seq
    d, f, r, v = a.hidden, a.intermediate, a.rank, a.vocab
    hd = a.hidden // a.heads
    qo, kv = a.heads * hd, a.kv_heads * hd
    projs = [("q", d, qo), ("k", d, kv), ("v", d, kv), ("o", qo, d),
             ("gate", d, f), ("up", d, f), ("down", f, d)]
    base_fwd = sum(2 * n * i * o for _, i, o in projs) * a.layers
    lora_fwd = sum(2 * n * r * (i + o) for _, i, o in projs) * a.layers
    lm_fwd = 2 * n * d * v
    # Input gradients. Layer 0's q/k/v inputs (rmsnorm of the frozen embedding) need none.
    skip_base = sum(2 * n * i * o for p, i, o in projs if p in ("q", "k", "v"))
    skip_lora_a = sum(2 * n * r * i for p, i, o in projs if p in ("q", "k", "v"))
    base_bwd_in = base_fwd - skip_base
    lora_bwd_in = lora_fwd - skip_lora_a  # through B (always) and through A (not layer 0 qkv)
    lm_bwd_in = lm_fwd
    lora_wgrad = lora_fwd  # dB = g^T u, dA = (g B)^T x: same shapes as the forward pair
    # Attention: QK^T and PV forward (2 matmuls), backward dQ, dK, dP, dV (4 matmuls).
    per_pair = 2 * a.batch * a.heads * hd * a.layers  # one query-key pair, one matmul
    full_pairs = a.seq * a.seq
    causal_pairs = a.seq * (a.seq + 1) // 2
    attn_full = 6 * per_pair * full_pairs
    attn_causal = 6 * per_pair * causal_pairs
    linear = base_fwd + lora_fwd + lm_fwd + base_bwd_in + lora_bwd_in + lm_bwd_in + lora_wgrad
    breakdown = {
        "base_linear_fwd": base_fwd,
        "lora_fwd": lora_fwd,
        "lm_head_fwd": lm_fwd,
        "base_linear_bwd_input": base_bwd_in,
        "lora_bwd_input": lora_bwd_in,
        "lm_head_bwd_input": lm_bwd_in,
        "lora_weight_grad": lora_wgrad,
        "attention_full_fwd": attn_full // 3,
        "attention_full_bwd": attn_full * 2 // 3,
        "attention_causal_fwd": attn_causal // 3,
        "attention_causal_bwd": attn_causal * 2 // 3,
        "not_counted_layer0_qkv_input_grad": skip_base + skip_lora_a,
    }
    return linear + attn_causal, linear + attn_full, breakdown


# --------------------------------------------------------------------------- main


def main(a):
    torch.manual_seed(a.seed)
    model = Llama(a)
    model.train()
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert all(p.requires_grad for p in lora)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    n_train = sum(p.numel() for p in lora)
    n_frozen = sum(p.numel() for p in model.parameters()) - n_train
    opt = torch.optim.AdamW(lora, lr=a.lr, weight_decay=0.0)

    g = torch.Generator().manual_seed(a.seed + 1)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
    targets = torch.full_like(ids, -100)
    targets[:, :-1] = ids[:, 1:]

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(ids, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lora, a.max_grad_norm)
        opt.step()
        return loss.item()

    losses, times = [], []
    for it in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        losses.append(loss)
        if it >= a.warmup:
            times.append(dt)
        sys.stderr.write("  step %3d%s  %.3f s  loss %.5f\n"
                         % (it, " (warm-up)" if it < a.warmup else "", dt, loss))

    flops, flops_torch, breakdown = count_flops(a)
    med = statistics.median(times)
    result = {
        "peer": "pytorch",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "blas": blas_summary(),
        "openblas": openblas_runtime(),
        "torch_package": debian_package_version("python3-torch"),
        "env": {k: os.environ.get(k) for k in ENV_REPORTED},
        "config": {k: getattr(a, k) for k in vars(a)},
        "params_frozen": n_frozen,
        "params_trainable": n_train,
        "step_seconds": [round(t, 6) for t in times],
        "best_s": round(min(times), 6),
        "median_s": round(med, 6),
        "tokens_per_s": round(a.batch * a.seq / med, 3),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses": losses,
        "flops_per_step": flops,
        "flops_per_step_torch": flops_torch,
        "flops_breakdown": breakdown,
        "gflops_per_s": round(flops / med / 1e9, 3),
    }
    ob = result["openblas"]
    sys.stderr.write(
        "pytorch %s (package %s) | %s | threads %d (interop %d)%s\n"
        "env: %s\n"
        "model d=%d L=%d H=%d KV=%d F=%d V=%d | batch %d x seq %d | LoRA r=%d alpha=%g on 7 proj"
        " | %.2fM frozen, %.3fM trainable\n"
        "step: median %.3f s, best %.3f s over %d iters (+%d warm-up) | %.1f tokens/s\n"
        "FLOPs/step %.2f G (attention causal), %.2f G as torch computes (full TxT, info)"
        " | %.2f GFLOP/s (causal count / median)\n"
        "loss %.5f -> %.5f\n"
        % (torch.__version__, result["torch_package"],
           result["blas"], result["threads"], result["interop_threads"],
           (" | OpenBLAS core %s, %s, %s threads" % (ob.get("core"), ob.get("parallel"),
                                                     ob.get("num_threads"))) if ob else "",
           " ".join("%s=%s" % kv for kv in result["env"].items() if kv[1] is not None),
           a.hidden, a.layers, a.heads, a.kv_heads, a.intermediate, a.vocab, a.batch, a.seq,
           a.rank, a.alpha, n_frozen / 1e6, n_train / 1e6,
           med, min(times), a.iters, a.warmup, result["tokens_per_s"],
           flops / 1e9, flops_torch / 1e9, result["gflops_per_s"],
           losses[0], losses[-1]))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(ARGS)
