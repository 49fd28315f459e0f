"""One decode call of a benchmark config (after warm-up), for Nsight Compute.

    ncu --set full -k regex:mla_decode --launch-skip 3 --launch-count 1 python3 benchmarks/ncu_one.py 8192 128 2 0 [ws|ws2]

The optional 5th argument forces a Hopper kernel (``launcher.WS`` / ``launcher.WS2``) instead of the dispatch's pick.
"""
import sys

import torch

from flash_mla.bench import Config, decode_call


def main():
    s_k, h_q, s_q, varlen = (int(x) for x in sys.argv[1:5])
    if len(sys.argv) > 5:
        import flash_mla.hopper.launcher as hl
        hl.CONFIG_OVERRIDE = {"ws": hl.WS, "ws2": hl.WS2}[sys.argv[5]]
    fn, _, _ = decode_call(Config(s_k, h_q, s_q, bool(varlen)), torch.bfloat16, "cuda")
    for _ in range(5):
        fn()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
