"""One decode call of a benchmark config (after warm-up), for Nsight Compute.

    ncu --set full -k regex:mla_decode --launch-skip 3 --launch-count 1 python3 benchmarks/ncu_one.py 8192 128 2 0
"""
import sys

import torch

from flash_mla import flash_mla_with_kvcache, get_mla_metadata
from flash_mla.bench import Config, make_inputs


def main():
    s_k, h_q, s_q, varlen = (int(x) for x in sys.argv[1:5])
    inp = make_inputs(Config(s_k, h_q, s_q, bool(varlen)), torch.bfloat16, device="cuda")
    q, kc, bt, sl = inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"]
    meta, splits = get_mla_metadata(sl, s_q * h_q, 1)
    for _ in range(5):
        flash_mla_with_kvcache(q, kc, bt, sl, 512, meta, splits, causal=True)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
