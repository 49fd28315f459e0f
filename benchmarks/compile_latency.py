"""First-call latency: cold (empty Triton cache) vs warm (cache from an earlier process), per backend.

    python benchmarks/compile_latency.py        # GPU machine; prints one line per (backend, cache state)
Each measurement is a fresh Python process that times its first decode call (metadata + attention +
combine, synchronised) and a second call, so the difference is compile/load time.
"""
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time, torch
import flash_mla
backend = sys.argv[1]
t0 = time.perf_counter()
torch.randn(64, 576, device="cuda").sum().item()      # CUDA context and torch's own kernels, not ours
init = time.perf_counter() - t0
t0 = time.perf_counter()
timings = flash_mla.warmup(num_heads_q=[128], seq_len_q=[1], dtype=torch.bfloat16, causal=True, backend=backend)
first = time.perf_counter() - t0
t0 = time.perf_counter()
flash_mla.warmup(num_heads_q=[128], seq_len_q=[1], dtype=torch.bfloat16, causal=True, backend=backend)
second = time.perf_counter() - t0
print(json.dumps({"init_s": init, "first_s": first, "second_s": second}))
"""


def measure(backend, cache_dir):
    env = dict(os.environ, TRITON_CACHE_DIR=cache_dir)
    res = subprocess.run([sys.executable, "-c", CHILD, backend], env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    import torch
    from flash_mla import resolve_backend
    q = torch.empty(1, 1, 128, 576, dtype=torch.bfloat16, device="cuda")
    kc = torch.empty(1, 64, 1, 576, dtype=torch.bfloat16, device="cuda")
    names = ["triton"] + (["hopper"] if resolve_backend(q, kc, 512) == "hopper" else [])
    for backend in names:
        with tempfile.TemporaryDirectory() as cache:
            cold = measure(backend, cache)
            warm = measure(backend, cache)
        print(f"first-call latency [{backend}, h_q=128 s_q=1 bf16]: cold cache {cold['first_s']:.2f} s, "
              f"warm cache {warm['first_s']:.2f} s, already-loaded call {warm['second_s'] * 1e3:.1f} ms "
              f"(CUDA/torch init before it, not counted: {warm['init_s']:.2f} s)")


if __name__ == "__main__":
    main()
