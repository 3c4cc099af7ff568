"""The machine's measured bf16 matrix rate (PyTorch, cuBLAS): a square 8192³ product and the base
GEMM shapes of the benchmark step. The square rate is the "measured bf16 matrix rate" the issue's
GEMM target refers to; run.sh passes it to the other programs."""

import argparse
import json

import torch


def rate(m: int, n: int, k: int, repeats: int = 20) -> float:
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    stop.record()
    torch.cuda.synchronize()
    return 2.0 * m * n * k * repeats / (start.elapsed_time(stop) * 1e-3) / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=8192)
    args = parser.parse_args()
    n, d, qkv, f, v = args.tokens, 2048, 4096, 5632, 32000
    shapes = {
        "square_8192": (8192, 8192, 8192),
        "qkv_forward": (n, qkv, d),
        "o_forward": (n, d, d),
        "gate_up_forward": (n, 2 * f, d),
        "down_forward": (n, d, f),
        "lm_head_forward": (n, v, d),
    }
    for name, (m, nn, k) in shapes.items():
        print(json.dumps({"impl": "torch_matmul", "shape": name, "M": m, "N": nn, "K": k,
                          "tflops": round(rate(m, nn, k), 1), "device": torch.cuda.get_device_name(),
                          "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
