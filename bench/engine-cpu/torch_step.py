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
F.scaled_dot_product_attention.) The decoder, the thread set-up and the BLAS report are shared
with the mixture benchmark's peer: ``bench/lib/torch_setup.py`` and ``bench/lib/torch_common.py``.

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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
sys.dont_write_bytecode = True  # no __pycache__ in bench/lib
import torch_setup  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    torch_setup.add_model_args(p)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    torch_setup.add_run_args(p)
    torch_setup.add_rope_norm_args(p)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    a = p.parse_args(argv)
    if a.hidden % a.heads != 0:
        p.error("--hidden must be divisible by --heads")
    if a.heads % a.kv_heads != 0:
        p.error("--heads must be divisible by --kv-heads")
    if (a.hidden // a.heads) % 2 != 0:
        p.error("head dim (hidden / heads) must be even for RoPE")
    torch_setup.check_run_args(p, a)
    return a


ARGS = parse_args()
torch = torch_setup.start_torch(ARGS.threads)  # the thread pools are sized before torch loads
import torch.nn as nn  # noqa: E402
import torch_common as tc  # noqa: E402


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


class Llama(tc.Decoder):
    def __init__(self, a):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab, a.hidden)
        self.layers = nn.ModuleList(
            [tc.Layer(a, lambda i, o: LoRALinear(i, o, a.rank, a.alpha)) for _ in range(a.layers)])
        self.norm = tc.RMSNorm(a.hidden, a.rms_eps)
        self.lm_head = nn.Linear(a.hidden, a.vocab, bias=False)
        self.init_frozen_head(0.02)
        for m in self.modules():
            if isinstance(m, LoRALinear):
                m.reset_parameters()
        self.add_buffers(a)

    def forward(self, ids, targets):
        return tc.cross_entropy(self.logits(ids), targets)


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
    ids, targets = tc.fixed_batch(a)

    def step():
        loss, _ = tc.train_step(opt, lora, a.max_grad_norm, lambda: model(ids, targets))
        return loss.item()

    losses, times = tc.time_steps(
        a, step, lambda it, warm, dt, loss: "  step %3d%s  %.3f s  loss %.5f\n" % (it, warm, dt, loss))
    flops, flops_torch, breakdown = count_flops(a)
    result = {
        "peer": "pytorch",
        **tc.torch_fields(),
        "interop_threads": torch.get_num_interop_threads(),
        "config": {k: getattr(a, k) for k in vars(a)},
        "params_frozen": n_frozen,
        "params_trainable": n_train,
        **tc.timing_fields(a, times, losses),
        "flops_per_step": flops,
        "flops_per_step_torch": flops_torch,
        "flops_breakdown": breakdown,
    }
    med = statistics.median(times)
    result["gflops_per_s"] = round(flops / med / 1e9, 3)
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
