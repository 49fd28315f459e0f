"""Per-page timeline of the per-tile-ring kernel (SM clock stamps of CTA (0, 0, 0); diagnostics only).

    python3 benchmarks/trace_tile.py 8192 128 2 0
Events per page (tile_kernel, via ws_kernel._stamp): softmax 0 before the first tile wait, 3..11 the waits for
tiles rope, 0, 4, 1, 5, 2, 6, 3, 7 done, 1 S done, 2 P published; P.V warpgroup w: 12+2w P ready, 13+2w its four
wgmmas retired and its tiles refilled (with the page two ahead).
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
    print("page n | S: start, tiles landed (rope,0,4,1,5,2,6,3,7), done, published | PV0 ready, refilled | "
          "PV1 ready, refilled   (cycles from page 2's S start)")
    per = []
    for n in range(2, min(n_pages - 1, 40)):
        r = [int(x) - base for x in t[n]]
        tiles = " ".join(f"{r[3 + k]:6d}" for k in range(9))
        print(f"{n:4d} | {r[0]:7d} [{tiles}] {r[1]:7d} {r[2]:7d} | {r[12]:7d} {r[13]:7d} | {r[14]:7d} {r[15]:7d}")
        per.append(int(t[n + 1, 1] - t[n, 1]))
    if per:
        print("median period (cycles):", sorted(per)[len(per) // 2])


if __name__ == "__main__":
    main()
