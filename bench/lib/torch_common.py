"""What bench's PyTorch peers share once torch is loaded (import it after torch_setup.start_torch).

* the BLAS report: which BLAS torch uses and what the OpenBLAS loaded in the process says (config,
  core kernel, threads), the Debian package's version, the variables that change the timing;
* the Llama decoder around the projections, written directly with torch ops (no
  ``transformers``): RMSNorm, RoPE (HF rotate-half, theta 10000, tables computed in float64 and
  rounded to float32), causal grouped-query attention (query head h reads kv head h // (H/KV),
  matmul -> additive causal mask of -inf -> softmax in float32 -> matmul, kv heads repeated as
  transformers' ``repeat_kv``), SwiGLU MLP, final RMSNorm, untied lm_head, mean next-token
  cross-entropy; each projection is built by the peer's ``site(in, out)`` (LoRA, a mixture ...);
* the batch (random ids, targets the ids shifted left by one, the last position of each row not
  counted), one optimizer step and the timing loop, and the JSON fields of a timed run.
"""

import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

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


def torch_fields():
    """A peer's JSON fields on torch: versions, threads, BLAS, OpenBLAS, the reported variables."""
    return {
        "torch_version": torch.__version__,
        "torch_package": debian_package_version("python3-torch"),
        "threads": torch.get_num_threads(),
        "blas": blas_summary(),
        "openblas": openblas_runtime(),
        "env": {k: os.environ.get(k) for k in ENV_REPORTED},
    }


# --------------------------------------------------------------------------- model


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
    def __init__(self, a, site):
        super().__init__()
        self.h, self.kv = a.heads, a.kv_heads
        self.hd = a.hidden // a.heads
        d = a.hidden
        self.q_proj = site(d, self.h * self.hd)
        self.k_proj = site(d, self.kv * self.hd)
        self.v_proj = site(d, self.kv * self.hd)
        self.o_proj = site(self.h * self.hd, d)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k = repeat_kv(k, self.h // self.kv)
        v = repeat_kv(v, self.h // self.kv)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.hd) + mask
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, self.h * self.hd)
        return self.o_proj(o)


class MLP(nn.Module):
    def __init__(self, a, site):
        super().__init__()
        self.gate_proj = site(a.hidden, a.intermediate)
        self.up_proj = site(a.hidden, a.intermediate)
        self.down_proj = site(a.intermediate, a.hidden)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    """One decoder layer; ``site(in, out)`` builds each of its 7 projections, in Llama's order."""

    def __init__(self, a, site):
        super().__init__()
        self.input_layernorm = RMSNorm(a.hidden, a.rms_eps)
        self.self_attn = Attention(a, site)
        self.post_attention_layernorm = RMSNorm(a.hidden, a.rms_eps)
        self.mlp = MLP(a, site)

    def forward(self, h, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Decoder(nn.Module):
    """The Llama around its layers. A subclass creates ``embed_tokens``, ``layers``, ``norm`` and
    ``lm_head`` (its order of creation sets the initial values), then calls ``init_frozen_head``
    and ``add_buffers``."""

    def init_frozen_head(self, std):
        nn.init.normal_(self.embed_tokens.weight, std=std)
        nn.init.normal_(self.lm_head.weight, std=std)
        self.embed_tokens.weight.requires_grad_(False)
        self.lm_head.weight.requires_grad_(False)

    def add_buffers(self, a):
        """RoPE's tables and the causal mask, for sequences up to ``a.seq``."""
        cos, sin = rope_tables(a.seq, a.hidden // a.heads, a.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.register_buffer("mask", torch.full((a.seq, a.seq), float("-inf")).triu(1), persistent=False)

    def logits(self, ids):
        t = ids.shape[1]
        cos, sin, mask = self.cos[:t], self.sin[:t], self.mask[:t, :t]
        h = self.embed_tokens(ids)
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        return self.lm_head(self.norm(h))


def cross_entropy(logits, targets):
    """Mean next-token cross-entropy over the targets that are not -100."""
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-100)


# --------------------------------------------------------------------------- steps


def fixed_batch(a):
    """Random ids [batch, seq] (seed + 1); targets are the ids shifted left, the last one -100."""
    g = torch.Generator().manual_seed(a.seed + 1)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
    targets = torch.full_like(ids, -100)
    targets[:, :-1] = ids[:, 1:]
    return ids, targets


def train_step(opt, params, max_grad_norm, loss_fn):
    """One step: zero_grad, ``loss_fn()`` (the loss, or a tuple that starts with it), backward,
    clip_grad_norm_, AdamW's step. Returns loss_fn's value and the gradient norm (before clipping)."""
    opt.zero_grad(set_to_none=True)
    out = loss_fn()
    (out[0] if isinstance(out, tuple) else out).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()
    return out, grad_norm


def time_steps(a, step, describe):
    """Runs ``a.warmup`` + ``a.iters`` steps, each described on stderr by
    ``describe(it, " (warm-up)" or "", seconds, step's value)``. Returns the steps' values and the
    timed (not warm-up) steps' seconds."""
    values, times = [], []
    for it in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        value = step()
        dt = time.perf_counter() - t0
        values.append(value)
        if it >= a.warmup:
            times.append(dt)
        sys.stderr.write(describe(it, " (warm-up)" if it < a.warmup else "", dt, value))
    return values, times


def timing_fields(a, times, losses):
    """A timed run's JSON fields: each timed step's seconds, median, best, tokens/s, the losses."""
    med = statistics.median(times)
    return {
        "step_seconds": [round(t, 6) for t in times],
        "median_s": round(med, 6),
        "best_s": round(min(times), 6),
        "tokens_per_s": round(a.batch * a.seq / med, 3),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses": losses,
    }
