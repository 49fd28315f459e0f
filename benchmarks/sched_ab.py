"""The scheduler's per-split overhead F for more than one row tile, A/B on the GPU (device only).

    python3 benchmarks/sched_ab.py [--fixed 5,2] [--reps 3] [--one] [s_k,h_q,s_q,varlen ...]
                                   (an F value with a "g" suffix, e.g. 5g: the greedy alone, WHOLE_SEQUENCES off)
                                   (default: the 12 configs of FlashMLA's matrix with s_q * h_q >= 128;
                                    --one: F for one row tile, scheduler.FIXED_OVERHEAD (and FIXED_OVERHEAD_SMALL),
                                    on the 10 varlen configs
                                    with s_q * h_q <= 64)

For each config the protocol's inputs are built once; the metadata is computed once per F value
(``scheduler.FIXED_OVERHEAD_TILES``), and the calls are timed with the protocol's do_bench, the F values interleaved
``--reps`` times. Printed per config: each F's median times, the ratio of the first F's best to each other's, and
the busiest part's pages under each F (the model: a CTA's time follows its pages when every CTA runs at its own
SM's rate). The default kernels and launcher are used; only the metadata differs.
"""
import argparse
import sys

import torch

import flash_mla.scheduler as S
from flash_mla import flash_mla_with_kvcache, get_mla_metadata
from flash_mla.bench import DV, H_KV, Config, make_inputs, matrix, time_ms


def busiest_pages(meta, seqlens):
    pages = []
    for bi, bs, ei, es, *_ in meta.tolist():
        n = 0
        for s in range(bi, ei + 1):
            st = bs if s == bi else 0
            en = es if s == ei else seqlens[s]
            n += -(-en // 64) - st // 64
        pages.append(n)
    return max(pages), sum(pages) / len(pages)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--fixed", default="5,2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--one", action="store_true", help="toggle F for one row tile instead (FIXED_OVERHEAD and, for "
                    "at most 32 rows, FIXED_OVERHEAD_SMALL, set to the same values)")
    args = ap.parse_args(argv)
    name = "FIXED_OVERHEAD" if args.one else "FIXED_OVERHEAD_TILES"
    fixed = args.fixed.split(",")   # "5": F = 5 (whole sequences where they apply); "5g": the greedy alone
    if args.configs:
        cfgs = [Config(*(int(x) for x in c.split(",")[:3]), bool(int(c.split(",")[3]))) for c in args.configs]
    elif args.one:
        cfgs = [c for c in matrix() if c.s_q * c.h_q <= 64 and c.varlen]
    else:
        cfgs = [c for c in matrix() if c.s_q * c.h_q >= 128]
    dev = torch.device("cuda")
    default, whole_default, small_default = getattr(S, name), S.WHOLE_SEQUENCES, S.FIXED_OVERHEAD_SMALL
    ratios = {f: [] for f in fixed[1:]}
    with torch.inference_mode():
        for cfg in cfgs:
            inp = make_inputs(cfg, torch.bfloat16, dev)
            q, kc, bt, sl = inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"]
            calls, model = {}, {}
            for f in fixed:
                setattr(S, name, int(f.rstrip("g")))
                if args.one:
                    S.FIXED_OVERHEAD_SMALL = int(f.rstrip("g"))
                S.WHOLE_SEQUENCES = not f.endswith("g")
                meta, splits = get_mla_metadata(sl, cfg.s_q * cfg.h_q // H_KV, H_KV)
                model[f] = busiest_pages(meta.cpu(), inp["seqlens"]) + (int(splits[-1]),)
                calls[f] = (lambda m=meta, n=splits: flash_mla_with_kvcache(q, kc, bt, sl, DV, m, n, causal=cfg.causal))
            setattr(S, name, default)
            S.WHOLE_SEQUENCES, S.FIXED_OVERHEAD_SMALL = whole_default, small_default
            ref = calls[fixed[0]]()
            for f in fixed[1:]:
                o = calls[f]()
                torch.cuda.synchronize()
                assert (o[0].float() - ref[0].float()).abs().max().item() < 2e-2, "outputs differ"
            times = {f: [] for f in fixed}
            for _ in range(args.reps):
                for f in fixed:
                    times[f].append(time_ms(calls[f], dev))
            best = {f: min(t) for f, t in times.items()}
            line = f"s={cfg.s} h_q={cfg.h_q:3d} s_q={cfg.s_q} varlen={int(cfg.varlen)}:"
            for f in fixed:
                mx, mean, nsp = model[f]
                line += (f" | F={f} {' '.join(f'{t:.4f}' for t in times[f])} ms (busiest {mx} pages, mean {mean:.1f},"
                         f" {nsp} splits)")
            for f in fixed[1:]:
                ratios[f].append(best[fixed[0]] / best[f])
                line += f" | F={fixed[0]}/F={f} {best[fixed[0]] / best[f]:.3f}"
            print(line, flush=True)
            del inp, calls, ref
            torch.cuda.empty_cache()
    for f, r in ratios.items():
        g = 1.0
        for x in r:
            g *= x
        print(f"geo-mean F={fixed[0]} ms / F={f} ms: {g ** (1 / len(r)):.4f} over {len(r)} configs; "
              f"min {min(r):.3f} max {max(r):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
