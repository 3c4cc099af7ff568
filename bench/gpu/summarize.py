"""Reads one run's JSON lines (bench/out/gpu-<stamp>/*.jsonl) and prints the results table with
the issue's targets: LoRA >= 1.2x PEFT's tokens/s, every mixture >= 2x the PyTorch per-expert
loop, base GEMMs >= 60 % of the measured bf16 matrix rate."""

import json
import pathlib
import sys


def rows(directory: pathlib.Path) -> list[dict]:
    out = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


def main() -> None:
    directory = pathlib.Path(sys.argv[1])
    data = rows(directory)
    # The faster of the engine's attention kernels per method (the row says which).
    engine = {}
    for r in data:
        if r["impl"] == "expertune" and (r["method"] not in engine or r["tokens_per_s"] > engine[r["method"]]["tokens_per_s"]):
            engine[r["method"]] = r
    peft = {r["method"]: r for r in data if r["impl"] == "peft"}
    loop = {r["method"]: r for r in data if r["impl"] == "torch_loop"}
    torch_mm = {r["shape"]: r for r in data if r["impl"] == "torch_matmul"}
    ours_mm = {r["shape"]: r for r in data if r["impl"] == "expertune_gemm"}
    measured = torch_mm.get("square_8192", {}).get("tflops")

    print("| method | Expertune tokens/s (attention) | MFU (of peak) | MFU (of measured) | baseline | baseline tokens/s | baseline MFU | ratio | target | met |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method in ["lora", "mola", "loramoe", "dynmole", "flylora"]:
        ours = engine.get(method)
        base = peft.get(method) if method == "lora" else loop.get(method)
        target = 1.2 if method == "lora" else 2.0
        name = "PEFT" if method == "lora" else "per-expert loop"
        if not ours or not base:
            print(f"| {method} | {ours and ours['tokens_per_s']} | | | {name} | {base and base['tokens_per_s']} | | missing | {target}x | no |")
            continue
        ratio = ours["tokens_per_s"] / base["tokens_per_s"]
        print(f"| {method} | {ours['tokens_per_s']:.0f} ({ours.get('attention', 'simt')}) | {ours['mfu']:.1%} | {ours['mfu_of_measured']:.1%} | {name} | "
              f"{base['tokens_per_s']:.0f} | {base['mfu']:.1%} | {ratio:.2f}x | {target}x | {'yes' if ratio >= target else 'NO'} |")
    print()
    print(f"Measured bf16 matrix rate (PyTorch, 8192^3): {measured} TFLOP/s")
    print()
    print("| GEMM shape | Expertune (cuBLASLt) TFLOP/s | PyTorch TFLOP/s | of measured | >= 60 % |")
    print("|---|---|---|---|---|")
    for shape, r in ours_mm.items():
        theirs = torch_mm.get(shape, {}).get("tflops")
        share = r["tflops"] / measured if measured else 0.0
        print(f"| {shape} ({r['M']}x{r['N']}x{r['K']}) | {r['tflops']} | {theirs} | {share:.0%} | {'yes' if share >= 0.6 else 'NO'} |")


if __name__ == "__main__":
    main()
