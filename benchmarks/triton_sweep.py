"""Device-only: time candidate launch configs of the portable Triton kernel on a few anchor configs.

Used to choose ``triton_kernel.pick_config``; results are logged in docs/perf-notes.md.
    python benchmarks/triton_sweep.py
"""
import itertools
import math
import random
import sys

import torch
import triton

from flash_mla import get_mla_metadata
from flash_mla.combine import combine_splits
from flash_mla.triton_kernel import mla_decode_triton

def candidates(num_rows):
    """Launch configs worth timing for a row count (history of the choices: docs/perf-notes.md)."""
    return [dict(BLOCK_M=m, BLOCK_N=n, num_warps=w, num_stages=st)
            for m, n, w, st in itertools.product((16, 32, 64), (32, 64), (4, 8), (2, 3))
            if m <= max(16, num_rows)]


def inputs(b, s_k, h_q, s_q, dtype=torch.bfloat16):
    random.seed(0)
    seqlens = torch.full((b,), s_k, dtype=torch.int32, device="cuda")
    pad = math.ceil(s_k / 256) * 256
    nblk = b * pad // 64
    bt = torch.randperm(nblk, generator=torch.Generator().manual_seed(0)).int().reshape(b, -1).cuda()
    kc = torch.randn(nblk, 64, 1, 576, dtype=dtype, device="cuda")
    q = torch.randn(b, s_q, h_q, 576, dtype=dtype, device="cuda")
    return q, kc, bt, seqlens


def main():
    b = 128
    shapes = ((8192, 16, 1), (8192, 16, 2), (8192, 64, 1), (8192, 128, 2))
    for s_k, h_q, s_q in shapes:
        q, kc, bt, sl = inputs(b, s_k, h_q, s_q)
        meta, ns = get_mla_metadata(sl, s_q * h_q, 1)
        R = s_q * h_q
        out = torch.empty(b, s_q, h_q, 512, dtype=q.dtype, device="cuda")
        lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device="cuda")
        oacc = torch.empty(b + meta.shape[0], 1, R, 512, dtype=torch.float32, device="cuda")
        lacc = torch.empty(b + meta.shape[0], 1, R, dtype=torch.float32, device="cuda")
        nbytes = (b * s_k * 576 + b * R * 576 + b * R * 512) * 2
        best = None
        for cfg in candidates(R):
            def fn():
                mla_decode_triton(q, kc, bt, sl, meta, ns, 576 ** -0.5, True, out, lse, oacc, lacc, config=cfg)
                combine_splits(ns, oacc, lacc, out, lse)
            try:
                fn()
                torch.cuda.synchronize()
                ms = triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")
            except Exception as e:  # out of resources etc.
                print(f"  s_k={s_k} h_q={h_q} s_q={s_q} {cfg}: FAIL {type(e).__name__}: {str(e)[:80]}")
                continue
            print(f"  s_k={s_k} h_q={h_q} s_q={s_q} {cfg}: {ms:.4f} ms {nbytes / ms / 1e6:.0f} GB/s", flush=True)
            if best is None or ms < best[0]:
                best = (ms, cfg)
        print(f"BEST s_k={s_k} h_q={h_q} s_q={s_q}: {best[0]:.4f} ms {nbytes / best[0] / 1e6:.0f} GB/s {best[1]}",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
