"""One decode call of a benchmark config (after warm-up), for Nsight Compute.

    ncu --set full -k regex:mla_decode --launch-skip 3 --launch-count 1 python3 benchmarks/ncu_one.py 8192 128 2 0 [ws|ws2|pair]

The optional 5th argument forces a Hopper kernel (``launcher.WS`` / ``launcher.WS2`` / ``launcher.PAIR``) instead of the
dispatch's pick,
or ``flashmla`` runs FlashMLA's own kernel (``flash_mla_cuda`` as built by ``benchmarks/flashmla_vs_ours.py`` in
``.flashmla_build``; kernel name ``flash_fwd_splitkv_mla_kernel``) on the same inputs.
"""
import sys

import torch

from flash_mla.bench import Config, decode_call


def main():
    s_k, h_q, s_q, varlen = (int(x) for x in sys.argv[1:5])
    which = sys.argv[5] if len(sys.argv) > 5 else None
    if which in ("ws", "ws2", "pair"):
        import flash_mla.hopper.launcher as hl
        hl.CONFIG_OVERRIDE = {"ws": hl.WS, "ws2": hl.WS2, "pair": hl.PAIR}[which]
    cfg = Config(s_k, h_q, s_q, bool(varlen))
    fn, inp, _ = decode_call(cfg, torch.bfloat16, "cuda")
    if which == "flashmla":
        from pathlib import Path
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from flashmla_vs_ours import flashmla_call, load_flashmla
        fn = flashmla_call(load_flashmla(Path(".flashmla_src/FlashMLA"), Path(".flashmla_build")), inp, cfg)
    for _ in range(5):
        fn()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
