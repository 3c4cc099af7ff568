"""PyTorch per-expert-loop mixture baseline, written the way the reference implementations run
their mixtures (MoLA, LoRAMoE, DynMoLE's MoE-PEFT; FlyLoRA's masked LoRA): every adapted linear
keeps its frozen base and a list of LoRA experts, computes router probabilities, and loops over
the experts in Python, each expert a LoRA (A then B) weighted by its gate.

- loramoe: dense softmax gates; every expert runs on every token (LoRAMoE's loop).
- mola, dynmole: sparse gates; each expert runs on the tokens routed to it, gathered with
  torch.where and scattered back with index_add_ (the Mixtral-style dispatch MoLA's and
  MoE-PEFT's code use). MoLA: top-2 renormalised; DynMoLE: Tsallis-entropy broadcast else top-p.
- flylora: r = 32 rank-1 experts with a frozen sparse random A stored dense (as the reference
  does), top-k = 8 of |x·Aᵀ + d| as a mask, one B.

8 experts of rank 8 (FlyLoRA r = 32, k = 8), alpha = 2·rank, on all 7 projections; AdamW (fused),
clipping at 1.0, bf16 autocast, adapter weights in fp32 as PEFT keeps them.
"""

import argparse
import contextlib
import math

import torch
from torch import nn

from common import PROJECTIONS, add_model_args, batch, build_model, report, require_cuda, time_steps


class MixtureLinear(nn.Module):
    def __init__(self, base: nn.Linear, method: str, experts: int, rank: int, top_k: int):
        super().__init__()
        self.base, self.method, self.experts, self.top_k = base, method, experts, top_k
        d_in, d_out = base.in_features, base.out_features
        self.scaling = 2.0
        device = base.weight.device
        if method == "flylora":
            # Frozen sparse A: each of r rows keeps d_in / (r / k) random inputs (FlyLoRA's layout).
            per_row = d_in // (rank // top_k)
            a = torch.zeros(rank, d_in, device=device)
            for i in range(rank):
                cols = torch.randperm(d_in, device=device)[:per_row]
                a[i, cols] = torch.randn(per_row, device=device) / rank
            self.register_buffer("fly_a", a)
            self.fly_b = nn.Parameter(torch.zeros(d_out, rank, device=device))
            self.register_buffer("fly_bias", torch.zeros(rank, device=device))
            return
        self.router = nn.Linear(d_in, experts, bias=False, device=device)
        self.lora_a = nn.ModuleList(nn.Linear(d_in, rank, bias=False, device=device) for _ in range(experts))
        self.lora_b = nn.ModuleList(nn.Linear(rank, d_out, bias=False, device=device) for _ in range(experts))
        for b in self.lora_b:
            nn.init.zeros_(b.weight)
        self.aux_loss = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.method == "flylora":
            h = x @ self.fly_a.t().to(x.dtype)
            score = (h + self.fly_bias.to(h.dtype)).abs()
            mask = torch.zeros_like(h).scatter_(-1, score.topk(self.top_k, dim=-1).indices, 1.0)
            return y + self.scaling * (h * mask) @ self.fly_b.t().to(h.dtype)
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs = torch.softmax(self.router(flat).float(), dim=-1)
        out = y.reshape(-1, y.shape[-1])
        if self.method == "loramoe":
            for e in range(self.experts):
                update = self.lora_b[e](self.lora_a[e](flat)) * self.scaling
                out = out + probs[:, e : e + 1].to(update.dtype) * update
            return out.reshape(*shape[:-1], -1)
        gates = self.sparse_gates(probs)
        # Switch-style balance loss, as both references add it.
        self.aux_loss = self.experts * ((gates > 0).float().mean(0) * probs.mean(0)).sum()
        out = out.clone()
        for e in range(self.experts):
            (rows,) = torch.where(gates[:, e] > 0)
            if rows.numel() == 0:
                continue
            update = self.lora_b[e](self.lora_a[e](flat[rows])) * self.scaling
            out.index_add_(0, rows, (gates[rows, e : e + 1].to(update.dtype) * update).to(out.dtype))
        return out.reshape(*shape[:-1], -1)

    def sparse_gates(self, probs: torch.Tensor) -> torch.Tensor:
        if self.method == "mola":
            top = probs.topk(2, dim=-1)
            kept = torch.zeros_like(probs).scatter_(-1, top.indices, top.values)
            return kept / kept.sum(-1, keepdim=True)
        # DynMoLE: Tsallis entropy (q = 1.1) normalised; uncertain tokens go to every expert,
        # the others to the top-p (0.75) set with at least one expert; gates not renormalised.
        q, eps = 1.1, 1e-6
        entropy = (1.0 - (probs + eps).pow(q).sum(-1)) / (q - 1.0)
        entropy = entropy / ((1.0 - self.experts ** (1.0 - q)) / (q - 1.0))
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep_sorted = (sorted_p.cumsum(-1) <= 0.75)
        keep_sorted[:, 0] = True
        keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
        keep = keep | (entropy > 0.9).unsqueeze(-1)
        return probs * keep


def attach(model, method: str, experts: int, rank: int, top_k: int) -> list[MixtureLinear]:
    layers = []
    for layer in model.model.layers:
        for parent, names in ((layer.self_attn, PROJECTIONS[:4]), (layer.mlp, PROJECTIONS[4:])):
            for name in names:
                wrapped = MixtureLinear(getattr(parent, name), method, experts, rank, top_k)
                setattr(parent, name, wrapped)
                layers.append(wrapped)
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--method", choices=["mola", "loramoe", "dynmole", "flylora"], required=True)
    args = parser.parse_args()
    require_cuda()

    model = build_model(args)
    fly = args.method == "flylora"
    mixtures = attach(model, args.method, experts=8, rank=32 if fly else 8, top_k=8 if fly else 2)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, fused=True)
    ids, labels = batch(args)
    autocast = contextlib.nullcontext() if args.no_autocast else torch.autocast("cuda", dtype=torch.bfloat16)

    def step():
        with autocast:
            loss = model(input_ids=ids, labels=labels).loss
            aux = [m.aux_loss for m in mixtures if getattr(m, "aux_loss", None) is not None]
            total = loss + 0.01 * torch.stack(aux).sum() if aux else loss
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    seconds, loss = time_steps(step, args)
    report("torch_loop", args.method, args, seconds, loss, sum(p.numel() for p in params),
           autocast=not args.no_autocast)


if __name__ == "__main__":
    main()
