"""Per-page timeline of the warp-specialized kernel (SM clock stamps of CTA (0, 0, 0); diagnostics only).

    python3 benchmarks/trace_ws.py 8192 128 2 0 [kernel=ws2,NAME=V,...]   (optional: ws2_kernel, module constants)
Events per page (ws_kernel._stamp): softmax 0 before kv_ready wait, 1 page ready, 2 S done, 3 P published;
P.V warpgroup w: 4+4w before waits, 5+4w P ready, 6+4w P.V done, 7+4w after refill (w=0) / arrive (w=1);
ws2 only, the softmax step X split: 12 M(n-1) in, 13 M(n) published and read back, 14 exps and row sums done
(printed as "X split": M-in, publish, exps, P-out, each from the previous event).
"""
import sys

import torch

import flash_mla.hopper.ws_kernel as W
from flash_mla.bench import Config, decode_call


def traced_run(mod, s_k, h_q, s_q, varlen):
    """Run one benchmark config a few times with ``mod.TRACE_BUF`` set (the kernel module whose stamps are
    wanted; the caller forces that kernel through ``launcher.CONFIG_OVERRIDE``) and return the stamps of the last
    call as a [256, 16] int64 CPU tensor."""
    mod.TRACE_BUF = torch.zeros(256 * 16, dtype=torch.int64, device="cuda")
    fn, _, _ = decode_call(Config(s_k, h_q, s_q, bool(varlen)), torch.bfloat16, "cuda")
    for _ in range(4):
        fn()
    torch.cuda.synchronize()
    return mod.TRACE_BUF.view(256, 16).cpu().long()


def main():
    s_k, h_q, s_q, varlen = (int(x) for x in sys.argv[1:5])
    import flash_mla.hopper.launcher as hl
    import flash_mla.hopper.ws2_kernel as W2
    opts = dict(kv.split("=") for kv in sys.argv[5].split(",")) if len(sys.argv) > 5 else {}
    kernel = opts.pop("kernel", "ws")     # kernel=ws2: the two-softmax-warpgroup kernel (same stamps)
    hl.CONFIG_OVERRIDE, mod = (hl.WS2, W2) if kernel == "ws2" else (hl.WS, W)
    for k, v in opts.items():
        setattr(mod, k, int(v))
    t = traced_run(mod, s_k, h_q, s_q, varlen)
    n_pages = int((t[:, 1] > 0).sum())
    print(f"s_k={s_k} h_q={h_q} s_q={s_q}: {n_pages} pages traced (CTA 0)")
    base = int(t[2, 1])
    print("page | kv-wait S X | P-wait0 PV0 refill0 | P-wait1 PV1 | load(n)=ready(n)-refill(n-2) | period   (cycles)")
    per = []
    for n in range(2, min(n_pages, 60)):
        r = t[n]
        load = int(r[1] - t[n - 2, 7]) if n >= 2 else 0
        period = int(t[n + 1, 1] - r[1]) if n + 1 < n_pages else 0
        per.append(period)
        print(f"{n:4d} | {int(r[1]-r[0]):6d} {int(r[2]-r[1]):5d} {int(r[3]-r[2]):5d} | {int(r[5]-r[4]):6d} "
              f"{int(r[6]-r[5]):5d} {int(r[7]-r[6]):6d} | {int(r[9]-r[8]):6d} {int(r[10]-r[9]):5d} | {load:6d} | {period:5d}"
              f"   [S start {int(r[1]-base):7d}, PV0 start {int(r[5]-base):7d}, PV0 end {int(r[6]-base):7d}, refill {int(r[7]-base):7d}]")
    if int(t[2:n_pages, 12].gt(0).sum()) > 0:   # ws2: the softmax step X in four parts, medians over pages 8..
        steady = t[8:min(n_pages, 240)]
        parts = [steady[:, 12] - steady[:, 2], steady[:, 13] - steady[:, 12], steady[:, 14] - steady[:, 13],
                 steady[:, 3] - steady[:, 14]]
        for par in (0, 1):
            med = [int(x[par::2].median()) for x in parts]
            print(f"X split, pages {'even' if par == 0 else 'odd'} (median): M-in {med[0]}, publish {med[1]}, "
                  f"exps {med[2]}, P-out {med[3]}")
    if per:
        per = [p for p in per if p > 0]
        print("median period (cycles):", sorted(per)[len(per) // 2])


if __name__ == "__main__":
    main()
