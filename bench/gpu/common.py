"""Shared by the PyTorch side of bench/gpu: the benchmark model, its batch, the timing loop, and
the model-FLOPs count (the same formula as engine_step.cpp, so MFU compares like with like)."""

import argparse
import json
import math
import sys
import time

import torch


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="H100 SXM dense bf16")
    parser.add_argument("--measured-tflops", type=float, default=0.0, help="from matmul_probe.py")
    parser.add_argument("--no-autocast", action="store_true",
                        help="run without torch.autocast(bf16) (HF Trainer's bf16=True uses it)")


PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_model(args):
    """A random-weight Llama in bf16 on the GPU, frozen, without a KV cache."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.seq,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        use_cache=False,
    )
    config._attn_implementation = "sdpa"  # PyTorch's fused (flash) attention
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.requires_grad_(False)
    model.train()
    return model


def batch(args):
    generator = torch.Generator(device="cuda").manual_seed(12345)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device="cuda", generator=generator)
    return ids, ids.clone()  # transformers shifts the labels itself


def flops_per_token(args, adapter_params: int) -> float:
    d, hd = args.hidden, args.hidden / args.heads
    q, kv, F, V, T = args.heads * hd, args.kv_heads * hd, args.intermediate, args.vocab, args.seq
    per_layer = d * (q + 2 * kv) + q * d + 3 * d * F
    base = args.layers * per_layer + V * d
    attention = args.layers * 3.5 * 2.0 * T * q
    return 4.0 * base + 6.0 * adapter_params + attention


def time_steps(step, args) -> tuple[float, float]:
    """Seconds per step (mean over args.steps after args.warmup) and the last loss."""
    loss = float("nan")
    start = 0.0
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        loss = step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / args.steps, float(loss)


def report(impl: str, method: str, args, seconds: float, loss: float, adapter_params: int, **extra) -> None:
    tokens = args.batch * args.seq
    tokens_per_s = tokens / seconds
    tflops = tokens_per_s * flops_per_token(args, adapter_params) / 1e12
    row = {
        "impl": impl,
        "method": method,
        "device": torch.cuda.get_device_name(),
        "tokens_per_s": round(tokens_per_s, 1),
        "step_ms": round(1e3 * seconds, 2),
        "model_tflops": round(tflops, 2),
        "mfu": round(tflops / args.peak_tflops, 4),
        "mfu_of_measured": round(tflops / args.measured_tflops, 4) if args.measured_tflops > 0 else 0.0,
        "adapter_params": adapter_params,
        "loss": round(loss, 4) if math.isfinite(loss) else None,
        "torch": torch.__version__,
        **extra,
    }
    print(json.dumps(row), flush=True)


def require_cuda() -> None:
    if not torch.cuda.is_available():
        print("bench/gpu: no CUDA device visible to PyTorch", file=sys.stderr)
        sys.exit(1)
