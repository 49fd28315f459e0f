"""Per-CTA timeline of the warp-specialized kernels (TRACE_MODE = 2; diagnostics only): where a call's time goes
outside the steady page loop.

    python3 benchmarks/trace_cta.py [--set Q_TMA=2] 8192 128 2 0 [4096 64 1 1 ...]   (s_k h_q s_q varlen, repeated)

``--set``: Hopper module constants overridden first, as ``hopper_dev.py --cfgs auto:...`` takes them (``NAME=V,...``).

For every CTA, P·V warpgroup 0 stamps (global timer ns, SM clock) at its entry and after storing each chunk's O
(``ws_kernel._cta_stamp``). Printed per config: the call time (do_bench, no tracing), the kernel span seen by the
stamps, the CTAs' start skew and end spread (tail), the SM clock (clock cycles / ns), and a least-squares fit of
chunk cycles = a + b * pages over the chunks after each CTA's first (a: the cost of a chunk boundary, b: the
steady cycles per page), plus the first chunk's extra cost (start-up: Q, first page in flight).
"""
import statistics
import sys

import torch
import triton

import flash_mla.hopper.launcher as hl
import flash_mla.hopper.ws2_kernel as W2
import flash_mla.hopper.ws_kernel as W
from flash_mla.bench import Config, decode_call


MAX_CTAS = 4096   # trace buffer rows (32 int64 slots per CTA)


def _fit(xs, ys):
    """(intercept, slope) of the least-squares line; (nan, mean ratio) when every x is the same."""
    try:
        slope, intercept = statistics.linear_regression(xs, ys)
    except statistics.StatisticsError:
        return float("nan"), sum(ys) / sum(xs)
    return intercept, slope


def trace_config(s_k, h_q, s_q, varlen):
    cfg = Config(s_k, h_q, s_q, bool(varlen))
    fn, inp, _ = decode_call(cfg, torch.bfloat16, "cuda")
    rows = s_q * h_q
    mod = W2 if hl.pick_config(rows) == hl.WS2 else W
    ms = triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
    mod.TRACE_BUF = torch.zeros(MAX_CTAS * 32, dtype=torch.int64, device="cuda")
    mod.TRACE_MODE = 2
    try:
        for _ in range(3):
            mod.TRACE_BUF.zero_()
            fn()
        torch.cuda.synchronize()
        t = mod.TRACE_BUF.view(MAX_CTAS, 32).cpu().long()
        ms_traced = triton.testing.do_bench(fn, warmup=5, rep=50, return_mode="median")
    finally:
        mod.TRACE_BUF, mod.TRACE_MODE = None, 1
    ctas = [i for i in range(MAX_CTAS) if t[i, 1] > 0]
    starts, ends, mhz, chunk_fit_x, chunk_fit_y, first = [], [], [], [], [], []
    per_page, n_per_cta = [], []
    for i in ctas:
        r = t[i]
        n_chunks = 0
        while 3 + 3 * n_chunks < 30 and r[3 + 3 * n_chunks + 1] > 0:
            n_chunks += 1
        if n_chunks == 0:
            continue
        n_per_cta.append(n_chunks)
        last = 3 + 3 * (n_chunks - 1)
        starts.append(int(r[0]))
        ends.append(int(r[last]))
        dns, dclk = int(r[last] - r[0]), int(r[last + 1] - r[1])
        mhz.append(dclk / max(dns, 1) * 1e3)
        pages = int(r[last + 2])
        if pages:
            per_page.append(dclk / pages)
        prev_clk, prev_it = int(r[1]), 0
        for c in range(n_chunks):
            s = 3 + 3 * c
            clk, it = int(r[s + 1]), int(r[s + 2])
            if c == 0:
                first.append((it, clk - prev_clk))
            else:
                chunk_fit_x.append(it - prev_it)
                chunk_fit_y.append(clk - prev_clk)
            prev_clk, prev_it = clk, it
    t0 = min(starts)
    span = (max(ends) - t0) / 1e3
    a, b = _fit(chunk_fit_x, chunk_fit_y) if len(chunk_fit_x) > 2 else (float("nan"), float("nan"))
    first_extra = statistics.median(c - p * b for p, c in first) if b == b else float("nan")
    tail = statistics.mean(max(ends) - e for e in ends) / 1e3
    print(f"s_k={s_k} h_q={h_q} s_q={s_q} varlen={varlen} kernel={'ws2' if mod is W2 else 'ws'}: "
          f"call {ms * 1e3:.1f} us (traced {ms_traced * 1e3:.1f}), kernel span {span:.1f} us over {len(ends)} CTAs")
    print(f"  CTA start skew {(max(starts) - t0) / 1e3:.1f} us; CTA end: first {(min(ends) - t0) / 1e3:.1f} us, "
          f"median {(statistics.median(ends) - t0) / 1e3:.1f} us, last {span:.1f} us; mean idle at the end "
          f"{tail:.1f} us ({tail / span * 100:.1f} % of the span)")
    print(f"  SM clock median {statistics.median(mhz):.0f} MHz (min {min(mhz):.0f}, max {max(mhz):.0f}); "
          f"cycles per page over a CTA's life: median {statistics.median(per_page):.0f} "
          f"(min {min(per_page):.0f}, max {max(per_page):.0f})")
    print(f"  chunks after the first ({len(chunk_fit_x)}): cycles = {a:.0f} + {b:.0f} * pages; "
          f"first chunk's extra (start-up) median {first_extra:.0f} cycles; chunks per CTA median "
          f"{statistics.median(n_per_cta):.0f}")
    steady = b * sum(p for p, _ in first) + b * sum(chunk_fit_x)
    total = sum(c for _, c in first) + sum(chunk_fit_y)
    print(f"  all CTAs: {total / 1e6:.2f} M cycles, of which pages at the steady rate {steady / total * 100:.1f} %, "
          f"chunk boundaries {a * len(chunk_fit_x) / total * 100:.1f} %, start-up "
          f"{sum(c - p * b for p, c in first) / total * 100:.1f} %")


def main():
    argv = sys.argv[1:]
    if argv[:1] == ["--set"]:
        import os
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from hopper_dev import override
        override(argv[1])
        argv = argv[2:]
    args = [int(x) for x in argv] or [8192, 128, 2, 0]
    with torch.inference_mode():
        for i in range(0, len(args), 4):
            trace_config(*args[i:i + 4])


if __name__ == "__main__":
    main()
