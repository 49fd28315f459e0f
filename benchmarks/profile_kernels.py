"""Per-kernel GPU time of one decode call (metadata, attention, combine) for some benchmark configs.

    python3 benchmarks/profile_kernels.py [s_k,h_q,s_q,varlen ...]
Uses torch.profiler (CUPTI) over 20 calls, after warm-up; prints the mean time per call of each kernel.
"""
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from flash_mla import get_mla_metadata
from flash_mla.bench import Config, decode_call


def main():
    cfgs = sys.argv[1:] or ["4096,64,1,1", "4096,32,2,1", "4096,64,1,0", "8192,64,1,1", "8192,128,2,0"]
    for c in cfgs:
        s_k, h_q, s_q, varlen = (int(x) for x in c.split(","))
        fn, inp, _ = decode_call(Config(s_k, h_q, s_q, bool(varlen)), torch.bfloat16, "cuda")
        q, sl = inp["q"], inp["cache_seqlens"]

        def call():      # the metadata kernel too, to show its time (the benchmark computes it once)
            get_mla_metadata(sl, s_q * h_q, 1)
            return fn()
        for _ in range(5):
            call()
        torch.cuda.synchronize()
        n = 20
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                call()
            torch.cuda.synchronize()
        tot = defaultdict(float)
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                tot[e.name[:60]] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        meta, splits = get_mla_metadata(sl, s_q * h_q, 1)
        nsplit = int(splits[-1].item())
        print(f"s_k={s_k} h_q={h_q} s_q={s_q} varlen={varlen}: splits total {nsplit} for b={q.shape[0]}")
        for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
            print(f"   {v / n:8.1f} us  {k}")


if __name__ == "__main__":
    main()
