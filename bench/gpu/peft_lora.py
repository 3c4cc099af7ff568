"""PyTorch + PEFT LoRA baseline: r = 16, alpha = 32, dropout 0 on all 7 projections, AdamW
(fused), gradient clipping at 1.0, bf16 autocast as HF Trainer's bf16=True runs it."""

import argparse
import contextlib

import torch

from common import PROJECTIONS, add_model_args, batch, build_model, report, require_cuda, time_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_model_args(parser)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    require_cuda()

    import peft
    from peft import LoraConfig, get_peft_model

    model = build_model(args)
    config = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=PROJECTIONS,
                        bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, fused=True)
    ids, labels = batch(args)
    autocast = contextlib.nullcontext() if args.no_autocast else torch.autocast("cuda", dtype=torch.bfloat16)

    def step():
        with autocast:
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    seconds, loss = time_steps(step, args)
    report("peft", "lora", args, seconds, loss, sum(p.numel() for p in params), peft=peft.__version__,
           autocast=not args.no_autocast)


if __name__ == "__main__":
    main()
