#!/usr/bin/python3
"""PyTorch peer for the mixture benchmark: one training step with a per-expert Python loop.

One training step (forward + backward + AdamW) of the same Llama as ``bench/engine-cpu``
(hidden 512, 8 layers, 8 query / 4 key-value heads of 64, intermediate 1408, vocab 8192,
batch 4 x seq 512, float32, random frozen weights) with an adapter on all 7 projections of
every layer, written the way the reference implementations run it (see
``../shared/docs/methods.md`` and ``docs/methods.md``):

* every adapted projection is an ``nn.Module`` holding the frozen base ``nn.Linear``, a router
  ``nn.Linear(in, E, bias=False)`` and ``E`` experts, each an ``nn.Linear(in, r)`` A and an
  ``nn.Linear(r, out)`` B (PEFT's layout);
* ``mola``: softmax (fp32) -> top-k -> renormalise -> for each expert, ``torch.where`` on the
  one-hot selection gathers its tokens, it computes ``B(A(x)) * s * w`` on them and
  ``index_add_`` puts them back (Mixtral's loop, as MoLA's ``Linear_MoE``). Aux loss: MoLA's
  load balance, one per layer over the rows of its 7 sites, counts of the top-k selections,
  summed over layers, coefficient 1e-3;
* ``loramoe``: dense softmax; every expert runs over all tokens and is added with its weight
  (``result = result + w[..., e:e+1] * B_e(A_e(x)) * s``, LoRAMoE's ``Linear``). No aux loss
  (its localized balancing constraint needs task types and is off in the released script);
* ``dynmole``: fp32 router, normalised Tsallis entropy (q = 1.1, eps 1e-5); tokens above the
  threshold (0.9) go to every expert, the others keep the top-p set (0.75; the expert whose
  cumulative sum crosses top-p is excluded) plus the first keep_top_k (2); weights are the
  masked probabilities, not renormalised; then a loop over experts on their tokens
  (``torch.where`` + ``index_add_``, MoE-PEFT's plugin loop). Aux losses pooled over every
  site of every layer: 0.01 x mean normalised entropy + 1e-3 x load balance with
  f = mean masked weights (DynMoLE's ``_dynamic_load_balancing_loss_func``);
* ``flylora``: frozen sparse A (r = 32, p_nz = in // (r // k) non-zeros per row, N(0, 1/r^2)),
  stored dense and applied as a dense matmul under ``torch.no_grad()`` (so, as in the
  reference ``layer.py``, no input gradient through the adapter branch); top-k (k = 8) of
  ``a + d`` (signed), ``B(a * mask) * s`` with B trained; the bias d moves by
  ``u * sign(mean(c) - c)`` after each forward (u = 1e-3);
* ``lora``: plain PEFT-style LoRA (``B(A(x)) * s``), the sanity reference; default rank
  E x r = 64.

Defaults: 8 experts of rank 8, alpha = 2 x rank (s = 2), dropout 0; FlyLoRA r = 32, k = 8,
alpha 64. Initialisation: base weights N(0, 1/fan_in) (the scale of the engine's
``randomWeights``, so the routers see activations of the same size), A and routers
kaiming-uniform(a = sqrt 5) (``nn.Linear``'s default), B ~ N(0, (0.1/sqrt r)^2): not zero,
so every gradient (and the routers') is non-trivial from the first step.

Run with Debian's interpreter (``apt-get install -y python3-torch``)::

    /usr/bin/python3 bench/methods-cpu/torch_mixture_step.py --method mola
    /usr/bin/python3 bench/methods-cpu/torch_mixture_step.py --method dynmole --threads 2 --iters 5
    /usr/bin/python3 bench/methods-cpu/torch_mixture_step.py --check --small   # every method

``--check``: (1) for each adapter module, the loop's output and gradients equal the dense
rank-block formula ``y = x W^T + s ((x A_cat^T) * G_hat) B_cat^T`` with independently computed
gates (docs/methods.md); (2) a few steps on one fixed batch with a high learning rate: the loss
is finite and decreases, every trainable tensor gets a finite non-zero gradient, FlyLoRA's A
stays frozen and its bias moves. Exit status 1 on a failure.

Output: one JSON line on stdout (median step seconds, tokens/s, ...), a summary on stderr.
Thread handling (OMP/OpenBLAS variables set before torch loads), the BLAS report and the decoder
around the adapted projections are shared with ``bench/engine-cpu/torch_step.py``:
``bench/lib/torch_setup.py`` and ``bench/lib/torch_common.py``.
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

METHODS = ("lora", "mola", "loramoe", "dynmole", "flylora")
ROUTED = ("mola", "loramoe", "dynmole")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# --small: the same model as `bench/methods-cpu/run.mjs --small` (and engine-cpu's).
SMALL = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=176, vocab=256, seq=64, batch=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", choices=METHODS, default="mola")
    torch_setup.add_model_args(p)
    p.add_argument("--small", action="store_true", help="the runner's smoke-test model (overrides the sizes)")
    p.add_argument("--experts", type=int, default=8, help="experts per site (mola, loramoe, dynmole)")
    p.add_argument("--rank", type=int, default=None,
                   help="rank of each expert (default 8); lora: of the adapter (default experts x 8); "
                        "flylora: of the adapter (default 32)")
    p.add_argument("--alpha", type=float, default=None, help="default 2 x rank")
    p.add_argument("--top-k", type=int, default=None, help="mola: experts per token (2); flylora: active ranks (8)")
    p.add_argument("--balance-coef", type=float, default=1e-3, help="load-balance loss weight (mola, dynmole)")
    p.add_argument("--top-p", type=float, default=0.75)
    p.add_argument("--keep-top-k", type=int, default=2)
    p.add_argument("--entropy-threshold", type=float, default=0.9)
    p.add_argument("--entropy-index", type=float, default=1.1)
    p.add_argument("--entropy-eps", type=float, default=1e-5)
    p.add_argument("--entropy-coef", type=float, default=0.01)
    p.add_argument("--fly-bias-rate", type=float, default=1e-3)
    torch_setup.add_run_args(p, lr=None, lr_help="default 1e-4 (1e-2 with --check)")
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    torch_setup.add_rope_norm_args(p)
    p.add_argument("--check", action="store_true", help="correctness checks instead of timing (all methods)")
    a = p.parse_args(argv)
    if a.small:
        for k, v in SMALL.items():
            setattr(a, k, v)
    if a.rank is None:
        a.rank = {"lora": a.experts * 8, "flylora": 32}.get(a.method, 8)
    if a.alpha is None:
        a.alpha = 2.0 * a.rank
    if a.top_k is None:
        a.top_k = 8 if a.method == "flylora" else 2
    if a.lr is None:
        a.lr = 1e-2 if a.check else 1e-4
    if a.hidden % a.heads or a.heads % a.kv_heads or (a.hidden // a.heads) % 2:
        p.error("need hidden % heads == 0, heads % kv-heads == 0 and an even head dim")
    torch_setup.check_run_args(p, a)
    if a.method == "mola" and not 1 <= a.top_k <= a.experts:
        p.error("mola needs 1 <= --top-k <= --experts")
    if a.method == "flylora" and (a.rank % a.top_k or a.top_k > a.rank):
        p.error("flylora needs --rank a multiple of --top-k")
    return a


ARGS = parse_args()
torch = torch_setup.start_torch(ARGS.threads)  # the thread pools are sized before torch loads
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch_common as tc  # noqa: E402


# --------------------------------------------------------------------------- adapters


def init_b(linear, rank):
    """B is not zero (see the module docstring): N(0, (0.1/sqrt r)^2)."""
    nn.init.normal_(linear.weight, std=0.1 / math.sqrt(rank))


class Site(nn.Module):
    """A frozen projection plus its adapter; subclasses add the adapter's delta."""

    def __init__(self, in_f, out_f):
        super().__init__()
        self.base = nn.Linear(in_f, out_f, bias=False)
        self.base.weight.requires_grad_(False)
        nn.init.normal_(self.base.weight, std=1.0 / math.sqrt(in_f))
        self.in_f, self.out_f = in_f, out_f
        self.drop = nn.Identity()  # dropout 0 (PEFT uses Identity then)
        self.keep_gates = False  # --check: keep the last dense gate matrix [T, E]
        self.last_gates = None


class LoRASite(Site):
    """PEFT's LoRA: y = x W^T + s * B(A(drop(x)))."""

    def __init__(self, in_f, out_f, a, sink, layer):
        super().__init__(in_f, out_f)
        self.lora_A = nn.Linear(in_f, a.rank, bias=False)
        self.lora_B = nn.Linear(a.rank, out_f, bias=False)
        init_b(self.lora_B, a.rank)
        self.scaling = a.alpha / a.rank
        self.experts, self.rank = 1, a.rank

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(self.drop(x))) * self.scaling

    def stacked(self):
        return self.lora_A.weight, self.lora_B.weight


class Expert(nn.Module):
    def __init__(self, in_f, out_f, rank):
        super().__init__()
        self.lora_A = nn.Linear(in_f, rank, bias=False)
        self.lora_B = nn.Linear(rank, out_f, bias=False)
        init_b(self.lora_B, rank)

    def forward(self, x):
        return self.lora_B(self.lora_A(x))


class RoutedSite(Site):
    """Router nn.Linear(in, E, bias=False) and E LoRA experts of rank r (kaiming A, routers)."""

    def __init__(self, in_f, out_f, a, sink, layer):
        super().__init__(in_f, out_f)
        self.router = nn.Linear(in_f, a.experts, bias=False)
        self.experts_ = nn.ModuleList([Expert(in_f, out_f, a.rank) for _ in range(a.experts)])
        self.scaling = a.alpha / a.rank
        self.experts, self.rank = a.experts, a.rank
        self.a, self.sink, self.layer = a, sink, layer

    def stacked(self):
        A = torch.cat([e.lora_A.weight for e in self.experts_], 0)
        B = torch.cat([e.lora_B.weight for e in self.experts_], 1)
        return A, B

    def forward(self, x):
        """y = x W^T + the mixture's delta, over the tokens as rows [T, in] (mola, dynmole)."""
        shape = x.shape
        xf = x.reshape(-1, self.in_f)
        y = self.base(xf)
        return (y + self.delta(xf)).reshape(*shape[:-1], self.out_f)

    def loop(self, xf, weight, routed):
        """Σ_e over the tokens routed to e: s * B_e(A_e(x)) * w[t, e]; routed: bool [T, E]."""
        delta = torch.zeros(xf.shape[0], self.out_f, dtype=xf.dtype)
        for e, expert in enumerate(self.experts_):
            tokens = torch.where(routed[:, e])[0]
            if tokens.numel() == 0:
                continue
            h = expert(self.drop(xf[tokens])) * self.scaling * weight[tokens, e, None]
            delta.index_add_(0, tokens, h)
        return delta


class MolaSite(RoutedSite):
    def delta(self, xf):
        logits = self.router(xf)
        p = F.softmax(logits, dim=-1, dtype=torch.float32)
        w, sel = torch.topk(p, self.a.top_k, dim=-1)
        w = (w / w.sum(dim=-1, keepdim=True)).to(xf.dtype)
        # Mixtral's loop: expert_mask [E, k, T]; torch.where gives (slot, token) per expert.
        expert_mask = F.one_hot(sel, num_classes=self.experts).permute(2, 1, 0)
        delta = torch.zeros(xf.shape[0], self.out_f, dtype=xf.dtype)
        for e, expert in enumerate(self.experts_):
            slot, tokens = torch.where(expert_mask[e])
            if tokens.numel() == 0:
                continue
            h = expert(self.drop(xf[tokens])) * self.scaling * w[tokens, slot, None]
            delta.index_add_(0, tokens, h)
        self.sink.append((self.layer, p, sel))
        if self.keep_gates:
            self.last_gates = torch.zeros_like(p).scatter(1, sel, w).detach()
        return delta


class LoramoeSite(RoutedSite):
    def forward(self, x):
        result = self.base(x)
        w = F.softmax(self.router(x), dim=-1, dtype=torch.float32).to(x.dtype)
        for e, expert in enumerate(self.experts_):
            result = result + w[..., e:e + 1] * expert(self.drop(x)) * self.scaling
        if self.keep_gates:
            self.last_gates = w.reshape(-1, self.experts).detach()
        return result


def tsallis_normalised(p, q, eps):
    """Ŝ_q(p) = S_q(p + eps) / S_q(uniform) per row (Shannon when q == 1)."""
    n = p.shape[-1]
    pt = p + eps
    if q == 1.0:
        return -(pt * pt.log()).sum(-1) / math.log(n)
    return ((1.0 - pt.pow(q).sum(-1)) / (q - 1.0)) / ((1.0 - n ** (1.0 - q)) / (q - 1.0))


def dynmole_mask(p, entropy, a):
    """Top-p (crossing expert excluded) + keep_top_k, or every expert above the entropy threshold."""
    with torch.no_grad():
        sorted_p, order = torch.sort(p, dim=-1, descending=True)
        keep_sorted = torch.cumsum(sorted_p, dim=-1) <= a.top_p
        keep_sorted[:, :a.keep_top_k] = True
        keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
        keep[entropy > a.entropy_threshold] = True
    return keep


class DynmoleSite(RoutedSite):
    def delta(self, xf):
        logits = self.router(xf.float())
        p = F.softmax(logits, dim=-1, dtype=torch.float32)
        entropy = tsallis_normalised(p, self.a.entropy_index, self.a.entropy_eps)
        keep = dynmole_mask(p, entropy.detach(), self.a)
        w = p * keep  # not renormalised
        delta = self.loop(xf, w.to(xf.dtype), keep)
        self.sink.append((self.layer, p, w, entropy, keep))
        if self.keep_gates:
            self.last_gates = w.detach()
        return delta


def flylora_sparse_a(rank, in_f, k):
    """[rank, in]: each row has in // (rank // k) non-zeros at random columns, N(0, 1/rank^2)."""
    nnz = in_f // (rank // k)
    A = torch.zeros(rank, in_f)
    for i in range(rank):
        cols = torch.randperm(in_f)[:nnz]
        A[i, cols] = torch.randn(nnz) / rank
    return A


class FlyloraSite(Site):
    def __init__(self, in_f, out_f, a, sink, layer):
        super().__init__(in_f, out_f)
        self.lora_A = nn.Linear(in_f, a.rank, bias=False)
        self.lora_B = nn.Linear(a.rank, out_f, bias=False)
        with torch.no_grad():
            self.lora_A.weight.copy_(flylora_sparse_a(a.rank, in_f, a.top_k))
        self.lora_A.weight.requires_grad_(False)
        init_b(self.lora_B, a.rank)
        self.register_buffer("topk_bias", torch.zeros(a.rank))
        self.scaling = a.alpha / a.rank
        self.experts, self.rank, self.k, self.u = a.rank, 1, a.top_k, a.fly_bias_rate

    def stacked(self):
        return self.lora_A.weight, self.lora_B.weight

    def forward(self, x):
        result = self.base(x)
        xd = self.drop(x)
        with torch.no_grad():
            act = self.lora_A(xd)
        _, idx = torch.topk(act + self.topk_bias, self.k, dim=-1)
        gate = torch.zeros_like(act).scatter_(-1, idx, 1.0)
        result = result + self.lora_B(act * gate) * self.scaling
        with torch.no_grad():  # the reference updates d in every forward
            counts = torch.bincount(idx.reshape(-1), minlength=self.experts).float()
            self.topk_bias.add_(self.u * torch.sign(counts.mean() - counts))
        if self.keep_gates:
            self.last_gates = gate.reshape(-1, self.experts)
        return result


SITE_CLASSES = {"lora": LoRASite, "mola": MolaSite, "loramoe": LoramoeSite,
                "dynmole": DynmoleSite, "flylora": FlyloraSite}


def aux_loss(method, records, a):
    """The reference's auxiliary losses from the routers' records of one forward, and stats."""
    if method == "mola":
        total = 0.0
        for layer in sorted({r[0] for r in records}):
            rows = [r for r in records if r[0] == layer]
            p = torch.cat([r[1] for r in rows])
            sel = torch.cat([r[2] for r in rows])
            counts = F.one_hot(sel, num_classes=p.shape[1]).sum(dim=(0, 1)).float()
            f = counts / counts.sum()
            total = total + p.shape[1] * (f * p.mean(0)).sum()
        return a.balance_coef * total, {"balance": float(total)}
    if method == "dynmole":
        p = torch.cat([r[1] for r in records])
        w = torch.cat([r[2] for r in records])
        entropy = torch.cat([r[3] for r in records])
        keep = torch.cat([r[4] for r in records])
        balance = p.shape[1] * (w.mean(0) * p.mean(0)).sum()
        ent = entropy.mean()
        stats = {"balance": float(balance), "entropy": float(ent),
                 "broadcast_fraction": float((keep.all(dim=1)).float().mean()),
                 "mean_experts_per_token": float(keep.float().sum(1).mean())}
        return a.balance_coef * balance + a.entropy_coef * ent, stats
    return None, {}


# --------------------------------------------------------------------------- model


class Llama(tc.Decoder):
    def __init__(self, a):
        super().__init__()
        self.method = a.method
        self.sink = []  # the routers' records of the current forward
        cls = SITE_CLASSES[a.method]
        layers = []
        for layer in range(a.layers):
            layers.append(tc.Layer(a, lambda i, o, layer=layer: cls(i, o, a, self.sink, layer)))
        self.sink.clear()
        self.layers = nn.ModuleList(layers)
        self.embed_tokens = nn.Embedding(a.vocab, a.hidden)
        self.norm = tc.RMSNorm(a.hidden, a.rms_eps)
        self.lm_head = nn.Linear(a.hidden, a.vocab, bias=False)
        self.init_frozen_head(1.0 / math.sqrt(a.hidden))
        self.add_buffers(a)
        self.a = a

    def sites(self):
        return [m for m in self.modules() if isinstance(m, Site)]

    def forward(self, ids, targets):
        """(total loss, cross-entropy, auxiliary loss or None, routing stats)."""
        self.sink.clear()
        ce = tc.cross_entropy(self.logits(ids), targets)
        aux, stats = aux_loss(self.method, self.sink, self.a)
        self.sink.clear()
        return (ce if aux is None else ce + aux), ce, aux, stats


def build(a):
    torch.manual_seed(a.seed)
    model = Llama(a)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=a.lr, weight_decay=0.0)
    return model, trainable, opt


def train_step(model, trainable, opt, ids, targets, a):
    (_, ce, aux, stats), grad_norm = tc.train_step(opt, trainable, a.max_grad_norm, lambda: model(ids, targets))
    return float(ce), (None if aux is None else float(aux)), float(grad_norm), stats


# --------------------------------------------------------------------------- timing


def bench(a):
    model, trainable, opt = build(a)
    ids, targets = tc.fixed_batch(a)
    n_train = sum(p.numel() for p in trainable)
    n_all = sum(p.numel() for p in model.parameters())
    steps, times = tc.time_steps(
        a, lambda: train_step(model, trainable, opt, ids, targets, a),
        lambda it, warm, dt, r: "  %s step %2d%s  %.3f s  loss %.5f%s\n" % (
            a.method, it, warm, dt, r[0], "" if r[1] is None else "  aux %.5f" % r[1]))
    losses = [r[0] for r in steps]
    med = statistics.median(times)
    config = {k: getattr(a, k) for k in vars(a)}
    result = {
        "peer": "pytorch-loop",
        "method": a.method,
        **tc.torch_fields(),
        "config": config,
        "adapter": {
            "experts": a.experts if a.method in ROUTED else (a.rank if a.method == "flylora" else 1),
            "rank": a.rank,
            "total_rank": a.experts * a.rank if a.method in ROUTED else a.rank,
            "alpha": a.alpha,
            "top_k": a.top_k if a.method in ("mola", "flylora") else None,
        },
        "params_trainable": n_train,
        "params_frozen": n_all - n_train,
        **tc.timing_fields(a, times, losses),
        "aux_losses": [r[1] for r in steps],
        "routing": steps[-1][3],
    }
    sys.stderr.write(
        "pytorch %s loop | %s | threads %d | d=%d L=%d F=%d V=%d batch %d x seq %d | %s"
        " | %.3fM trainable\nstep: median %.3f s, best %.3f s over %d iters (+%d warm-up)"
        " | %.1f tokens/s | loss %.5f -> %.5f\n" % (
            a.method, result["blas"], result["threads"], a.hidden, a.layers, a.intermediate,
            a.vocab, a.batch, a.seq, json.dumps(result["adapter"]), n_train / 1e6, med,
            min(times), a.iters, a.warmup, result["tokens_per_s"], losses[0], losses[-1]))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- --check


def dense_reference(site, x, method, a):
    """y = x W^T + s ((x A_cat^T) * G_hat) B_cat^T with gates recomputed independently."""
    A, B = site.stacked()
    H = x @ A.t()
    if method == "lora":
        G = torch.ones(x.shape[0], 1)
    elif method == "flylora":
        H = H.detach()  # the reference's no_grad
        G = site.last_gates
    else:
        p = torch.softmax(x @ site.router.weight.t(), dim=-1)
        if method == "loramoe":
            G = p
        elif method == "mola":
            top = torch.topk(p, a.top_k, dim=-1)
            G = torch.zeros_like(p).scatter(1, top.indices, top.values / top.values.sum(-1, keepdim=True))
        else:
            keep = torch.zeros_like(p, dtype=torch.bool)
            ent = tsallis_normalised(p, a.entropy_index, a.entropy_eps)
            for t in range(p.shape[0]):  # the rule, row by row, as docs/methods.md states it
                order = sorted(range(p.shape[1]), key=lambda e: (-float(p[t, e]), e))
                c = 0.0
                for j, e in enumerate(order):
                    c += float(p[t, e])
                    if c <= a.top_p or j < a.keep_top_k or float(ent[t]) > a.entropy_threshold:
                        keep[t, e] = True
            G = p * keep
    Ghat = G.repeat_interleave(site.rank, dim=1)
    return site.base(x) + site.scaling * (H * Ghat) @ B.t()


def check_sites(a, failures):
    """Each method's loop against the dense rank-block formula: outputs and gradients."""
    torch.manual_seed(123)
    for method in METHODS:
        b = argparse.Namespace(**vars(a))
        b.method = method
        b.rank = {"lora": 16, "flylora": 32}.get(method, 8)
        b.alpha = 2.0 * b.rank
        b.top_k = 8 if method == "flylora" else 2
        # Routers at their initial scale and sharper, so DynMoLE meets broadcast, top-p and keep_top_k.
        for in_f, out_f, sharpen in ((48, 40, 1.0), (40, 56, 2.5), (48, 56, 6.0)):
            site = SITE_CLASSES[method](in_f, out_f, b, [], 0)
            if method in ROUTED:
                with torch.no_grad():
                    site.router.weight.mul_(sharpen)
            site.keep_gates = True
            x = torch.randn(64, in_f, requires_grad=True)
            y = site(x)
            gy = torch.randn_like(y)
            params = [p for p in site.parameters() if p.requires_grad]
            grads = torch.autograd.grad(y, [x] + params, gy)
            ref_gates = None if site.last_gates is None else site.last_gates.clone()
            ref = dense_reference(site, x, method, b)
            ref_grads = torch.autograd.grad(ref, [x] + params, gy)
            err = (y - ref).abs().max().item() / (ref.abs().max().item() + 1e-12)
            gerr = max(((g - r).abs().max() / (r.abs().max() + 1e-12)).item()
                       for g, r in zip(grads, ref_grads))
            extra = ""
            ok = err < 1e-5 and gerr < 1e-4
            if method == "dynmole":
                kept = (ref_gates > 0).float().sum(1)
                extra = ", experts per token %.2f (min %d, all %d of %d tokens)" % (
                    kept.mean(), kept.min(), int((kept == b.experts).sum()), kept.numel())
            if method == "flylora":
                ok = ok and bool((ref_gates.sum(1) == b.top_k).all())
            sys.stderr.write("  site %-8s %dx%d: output rel err %.2e, grad rel err %.2e%s  %s\n"
                             % (method, in_f, out_f, err, gerr, extra, "ok" if ok else "FAIL"))
            if not ok:
                failures.append("%s site %dx%d: output %.2e, grad %.2e" % (method, in_f, out_f, err, gerr))


def check_training(a, failures):
    """A few steps on one fixed batch with a high learning rate, for every method."""
    out = {}
    for method in METHODS:
        b = argparse.Namespace(**vars(a))
        b.method = method
        b.rank = {"lora": a.experts * 8, "flylora": 32}.get(method, 8)
        b.alpha = 2.0 * b.rank
        b.top_k = 8 if method == "flylora" else 2
        model, trainable, opt = build(b)
        ids, targets = tc.fixed_batch(b)
        fly_a = [s.lora_A.weight.clone() for s in model.sites()] if method == "flylora" else None
        losses = []
        bad_grads = []
        steps = max(a.iters, 8)
        for it in range(steps):
            opt.zero_grad(set_to_none=True)
            loss, ce, aux, stats = model(ids, targets)
            loss.backward()
            if it == 0:
                for name, p in model.named_parameters():
                    if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all()
                                            or p.grad.abs().max() == 0):
                        bad_grads.append(name)
            torch.nn.utils.clip_grad_norm_(trainable, b.max_grad_norm)
            opt.step()
            losses.append(float(ce))
        finite = all(math.isfinite(x) for x in losses)
        decreased = finite and losses[-1] < losses[0] - 0.05
        problems = []
        if not finite:
            problems.append("non-finite loss")
        if not decreased:
            problems.append("loss did not decrease")
        if bad_grads:
            problems.append("zero/non-finite/missing gradient: %s" % ", ".join(bad_grads[:4]))
        if method == "flylora":
            sites = model.sites()
            if any(not torch.equal(s.lora_A.weight, w) for s, w in zip(sites, fly_a)):
                problems.append("FlyLoRA A changed")
            if all(s.topk_bias.abs().max() == 0 for s in sites):
                problems.append("FlyLoRA bias never moved")
            nnz = {int(n) for s in sites for n in (s.lora_A.weight != 0).sum(1)}
            expect = {s.in_f // (s.experts // s.k) for s in sites}
            if nnz != expect:
                problems.append("FlyLoRA A non-zeros per row %s, expected %s" % (nnz, expect))
        if method in ROUTED:
            routers = [s.router.weight for s in model.sites()]
            if not routers or any(r.grad is None for r in routers):
                problems.append("router without gradient")
        sys.stderr.write("  train %-8s loss %.4f -> %.4f over %d steps (lr %g)%s  %s\n" % (
            method, losses[0], losses[-1], steps, b.lr,
            "" if not stats else "  " + json.dumps({k: round(v, 4) for k, v in stats.items()}),
            "ok" if not problems else "FAIL: " + "; ".join(problems)))
        failures.extend("%s: %s" % (method, p) for p in problems)
        out[method] = {"losses": losses, "problems": problems}
    return out


def check(a):
    failures = []
    sys.stderr.write("loop vs dense rank-block formula (docs/methods.md):\n")
    check_sites(a, failures)
    sys.stderr.write("training on one fixed batch (d=%d L=%d, batch %d x seq %d):\n"
                     % (a.hidden, a.layers, a.batch, a.seq))
    training = check_training(a, failures)
    sys.stdout.write(json.dumps({"check": "torch_mixture_step", "ok": not failures,
                                 "failures": failures, "training": training}) + "\n")
    sys.stderr.write("check: %s\n" % ("ok" if not failures else "FAILED: " + "; ".join(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    if ARGS.check:
        sys.exit(check(ARGS))
    bench(ARGS)
