"""Per-page timeline of the per-tile-ring kernel (SM clock stamps of CTA (0, 0, 0); diagnostics only).

    python3 benchmarks/trace_tile.py 8192 128 2 0
Events per page (tile_kernel, via ws_kernel._stamp): softmax 0 before the first tile wait, 1 S done, 2 P published;
P.V warpgroup w: 4+4w before the p_ready wait, 5+4w P ready, 6+4w last P.V wgmma retired (tiles refilled),
7+4w next page looked up.
"""
import sys

import torch

import flash_mla.hopper.launcher as hl
import flash_mla.hopper.tile_kernel as T
from flash_mla.bench import Config, decode_call


def main():
    s_k, h_q, s_q, varlen = (int(x) for x in sys.argv[1:5])
    hl.CONFIG_OVERRIDE = hl.TILE
    T.TRACE_BUF = torch.zeros(256 * 16, dtype=torch.int64, device="cuda")
    fn, _, _ = decode_call(Config(s_k, h_q, s_q, bool(varlen)), torch.bfloat16, "cuda")
    for _ in range(4):
        fn()
    torch.cuda.synchronize()
    t = T.TRACE_BUF.view(256, 16).cpu().long()
    n_pages = int((t[:, 1] > 0).sum())
    print(f"s_k={s_k} h_q={h_q} s_q={s_q} GATE={T.GATE}: {n_pages} pages traced (CTA 0)")
    base = int(t[2, 0])
    print("page | wait+S softmax | P-wait0 PV0 | P-wait1 PV1 | period(S done)   [times from page 2's start]")
    per = []
    for n in range(2, min(n_pages - 1, 60)):
        r = t[n]
        period = int(t[n + 1, 1] - r[1])
        per.append(period)
        print(f"{n:4d} | {int(r[1]-r[0]):6d} {int(r[2]-r[1]):5d} | {int(r[5]-r[4]):6d} {int(r[6]-r[5]):5d} | "
              f"{int(r[9]-r[8]):6d} {int(r[10]-r[9]):5d} | {period:5d}   [S start {int(r[0]-base):7d}, "
              f"S done {int(r[1]-base):7d}, PV0 start {int(r[5]-base):7d}, PV0 end {int(r[6]-base):7d}]")
    if per:
        print("median period (cycles):", sorted(per)[len(per) // 2])


if __name__ == "__main__":
    main()
