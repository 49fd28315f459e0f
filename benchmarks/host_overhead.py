"""Host (Python) time per decode call, measured where the GPU work is negligible (b=1, 64 keys).

    python benchmarks/host_overhead.py [--profile] [--ab]
--ab: the hopper path with and without cached TMA descriptor encodings (launch.FAST_DESCRIPTORS), interleaved.
In do_bench's protocol the GPU is idle while the host prepares the first launch after L2 flush finishes,
so host time before the first kernel adds to short configs (s_k = 4096, ~0.23 ms): keep it well below that.
"""
import cProfile
import pstats
import sys
import time

import torch

from flash_mla import flash_mla_with_kvcache, get_mla_metadata, resolve_backend


def _inputs():
    """One sequence of 64 keys, h_q = 128: the GPU work is negligible next to the host path."""
    q = torch.randn(1, 1, 128, 576, dtype=torch.bfloat16, device="cuda")
    kc = torch.randn(2, 64, 1, 576, dtype=torch.bfloat16, device="cuda")
    bt = torch.arange(2, dtype=torch.int32, device="cuda")[None]
    sl = torch.tensor([64], dtype=torch.int32, device="cuda")
    meta, splits = get_mla_metadata(sl, 128, 1)
    return q, kc, bt, sl, meta, splits


def main():
    q, kc, bt, sl, meta, splits = _inputs()
    names = ["triton"] + (["hopper"] if resolve_backend(q, kc, 512) == "hopper" else [])
    for backend in names:
        def call():
            return flash_mla_with_kvcache(q, kc, bt, sl, 512, meta, splits, causal=True, backend=backend)
        for _ in range(20):
            call()
        torch.cuda.synchronize()
        n = 2000
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        host = (time.perf_counter() - t0) / n
        torch.cuda.synchronize()
        print(f"host time per call [{backend}]: {host * 1e6:.1f} us")
        if "--profile" in sys.argv:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(500):
                call()
            prof.disable()
            torch.cuda.synchronize()
            pstats.Stats(prof).sort_stats("tottime").print_stats(14)


def ab():
    import statistics

    import flash_mla.launch as L
    q, kc, bt, sl, meta, splits = _inputs()
    times = {True: [], False: []}
    for _ in range(7):
        for flag in (True, False):
            L.FAST_DESCRIPTORS = flag
            for _ in range(20):
                flash_mla_with_kvcache(q, kc, bt, sl, 512, meta, splits, causal=True, backend="hopper")
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(1000):
                flash_mla_with_kvcache(q, kc, bt, sl, 512, meta, splits, causal=True, backend="hopper")
            times[flag].append((time.perf_counter() - t0) / 1000 * 1e6)
            torch.cuda.synchronize()
    L.FAST_DESCRIPTORS = True
    for flag, name in ((True, "cached descriptors"), (False, "encoded per launch")):
        print(f"hopper host time per call, {name}: median {statistics.median(times[flag]):.1f} us "
              f"(runs {', '.join(f'{t:.0f}' for t in times[flag])})")


if __name__ == "__main__":
    ab() if "--ab" in sys.argv else main()
