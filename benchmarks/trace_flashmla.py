"""Per-pair timeline of FlashMLA's own kernel (SM clock stamps of CTA (0, 0, 0); device only, diagnostics).

    python3 benchmarks/trace_flashmla.py 8192 128 2 0 [--src .flashmla_src/FlashMLA] [--build .flashmla_build_trace]

Builds a copy of FlashMLA c2067be with ``flashmla_trace_patch`` applied (a few minutes, kept in ``--build`` while the
machine stays warm), runs the config on the protocol's inputs and prints the stamps in ``trace_pair.py``'s layout,
so that each step of FlashMLA's pair can be set against the same step of ``pair_kernel``. Events: see
``flashmla_trace_patch``. Also prints the traced build's do_bench time (the stamps' own cost shows against the
anchor).
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flashmla_trace_patch import patch  # noqa: E402
from flashmla_vs_ours import flashmla_call, load_flashmla  # noqa: E402
from trace_pair import print_pairs  # noqa: E402

from flash_mla.bench import Config, decode_call, time_ms  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("shape", nargs=4, type=int, help="s_k h_q s_q varlen")
    ap.add_argument("--src", default=".flashmla_src/FlashMLA")
    ap.add_argument("--build", default=".flashmla_build_trace")
    args = ap.parse_args(argv)
    s_k, h_q, s_q, varlen = args.shape
    ext = load_flashmla(Path(args.src), Path(args.build), patch=patch)
    cfg = Config(s_k, h_q, s_q, bool(varlen))
    dev = torch.device("cuda")
    with torch.inference_mode():
        _, inp, _ = decode_call(cfg, torch.bfloat16, dev)
        fn = flashmla_call(ext, inp, cfg)
        print(f"traced FlashMLA do_bench: {time_ms(fn, dev):.4f} ms", flush=True)
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        ext.reset_trace()
        fn()
        torch.cuda.synchronize()
    t = ext.get_trace().view(256, 16).long()
    n = int((t[:, 6] > 0).sum())
    print(f"s_k={s_k} h_q={h_q} s_q={s_q} varlen={varlen}: {n} pairs traced (CTA 0, first sequence)")
    print_pairs(t, n, [0, 1, 2, 3, 7, 4, 5, 6], [8, 9, 10, 11, 13, 12, 14],
                "wg0 deltas: sm0 P0V0L sc1+tma P0pub P1in S0-3+tma S4-8 | wg1 (from wg0 start): start sc0 pub1+P1 "
                "PVissued V1Rdone+tma done+tma S'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
