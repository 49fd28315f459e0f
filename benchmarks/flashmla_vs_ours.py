"""FlashMLA (CUDA, built from source) and flash_mla, timed in one process on the same inputs (device only).

    python3 benchmarks/flashmla_vs_ours.py [--src .flashmla_src/FlashMLA] [--reps 3] [--probe 8192,128,2,0 ...]
                                           [--json out.json] [s_k,h_q,s_q,varlen ...]

``--src`` is a FlashMLA checkout at the anchors' commit (c2067be) with CUTLASS's ``include/`` under
``csrc/cutlass`` (the submodule's commit); nothing of it is committed here (``.flashmla_src/`` is git-ignored;
``benchmarks/flashmla_src.sh`` lays it out from local mirrors). If ``flash_mla_cuda`` is not built there yet,
it is built (in a copy, ``--build``) for sm_90a (bf16 only, ``FLASH_MLA_DISABLE_FP16=1``): a few minutes.

Timing: the anchors' protocol (``flash_mla.bench``: b = 128, bf16, causal, do_bench median, warmup 25 / rep 200),
each config's inputs built once and both kernels timed alternately ``--reps`` times (order ABBA...: on a
power-capped card the kernel that runs first after a pause can get a higher clock); the best median of each is
kept. Each kernel's output is compared with the other's (FlashMLA's cos_diff metric).

``--timeline``: each kernel's device time for both (CUPTI medians: the attention kernel, the combine, the gaps
between them), so that a per-call difference can be placed in one kernel.

``--probe`` configs are also run back to back for ~1.5 s per kernel (twice, alternating) while ``nvidia-smi``
samples the SM clock and board power every 50 ms: on a power-capped card the clock each kernel runs at, and the
SM cycles per call it spends, tell a schedule difference (cycles) from an energy difference (clock).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from flash_mla.bench import (DV, H_KV, Config, cos_diff, decode_call, flops_bytes, geomean, git_commit, matrix,
                             time_ms)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clock_probe import sample_while_running  # noqa: E402


def load_flashmla(src: Path, build: Path, patch=None):
    """Imports ``flash_mla_cuda``, building it first (a copy of ``src`` in ``build``) if ``build`` lacks it.

    ``build`` is not carried to the device by the run tool, so a warm machine keeps the built module between
    calls while ``src`` (carried) is replaced on every call. ``patch``: a callable applied to the copy before the
    build (``flashmla_trace_patch.patch``; use its own ``build`` directory).
    """
    if not list(build.glob("flash_mla_cuda*.so")):
        shutil.rmtree(build, ignore_errors=True)
        shutil.copytree(src, build)
        if patch is not None:
            patch(build)
        # flash_api.cpp goes through the host compiler, which (unlike nvcc) does not know CUDA 13's CCCL path.
        cccl = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include" / "cccl"
        env = dict(os.environ, FLASH_MLA_DISABLE_FP16="1", NVCC_THREADS="8", MAX_JOBS="4",
                   CPLUS_INCLUDE_PATH=f"{cccl}:{os.environ.get('CPLUS_INCLUDE_PATH', '')}")
        t0 = time.time()
        r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=build, env=env,
                           capture_output=True, text=True)
        print(f"built flash_mla_cuda in {time.time() - t0:.0f} s (exit {r.returncode})", flush=True)
        out = (r.stdout + r.stderr).splitlines()
        if r.returncode:
            print("\n".join(ln for ln in out if "error" in ln.lower() or "FAILED" in ln)[-6000:])
            raise SystemExit(1)
        print("\n".join(ln for ln in out if "registers" in ln or "spill" in ln))
    sys.path.insert(0, str(build.resolve()))
    import flash_mla_cuda
    return flash_mla_cuda


def flashmla_call(ext, inp: dict, cfg: Config):
    q, kc, bt, sl = inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"]
    meta, splits = ext.get_mla_metadata(sl, cfg.s_q * cfg.h_q // H_KV, H_KV)
    scale = q.shape[-1] ** -0.5

    def fn():
        return ext.fwd_kvcache_mla(q, kc, DV, sl, bt, scale, cfg.causal, meta, splits)

    return fn


def probe(fn, seconds: float = 1.5) -> dict:
    """Back-to-back calls for ``seconds`` while nvidia-smi samples the SM clock and power (medians)."""
    ms, rows = sample_while_running(fn, "clocks.sm,power.draw,temperature.gpu", seconds, interval_ms=50, batch=20,
                                    settle=0.2)
    clk = statistics.median(r[0] for r in rows)
    return dict(ms_loop=ms, mhz=clk, watts=statistics.median(r[1] for r in rows),
                temp=statistics.median(r[2] for r in rows), mcycles=ms * clk * 1e-3, samples=len(rows))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--src", default=".flashmla_src/FlashMLA")
    ap.add_argument("--build", default=".flashmla_build")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--probe", nargs="*", default=[])
    ap.add_argument("--json")
    ap.add_argument("--set", help="Hopper module constants for ours, as hopper_dev.py --cfgs auto:... (NAME=V,...)")
    ap.add_argument("--timeline", action="store_true",
                    help="also each kernel's device time (CUPTI, call_timeline.kernels_per_call) for both, per config")
    args = ap.parse_args(argv)
    if args.set:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from hopper_dev import override
        override(args.set)
    ext = load_flashmla(Path(args.src), Path(args.build))
    cfgs = ([Config(*(int(x) for x in c.split(",")[:3]), bool(int(c.split(",")[3]))) for c in args.configs]
            if args.configs else matrix())
    dev = torch.device("cuda")

    def bench(fn):
        return time_ms(fn, dev)   # the protocol's do_bench median

    rows = []
    with torch.inference_mode():
        for cfg in cfgs:
            ours, inp, chosen = decode_call(cfg, torch.bfloat16, dev)
            theirs = flashmla_call(ext, inp, cfg)
            o1, l1 = theirs()
            o2, l2 = ours()
            torch.cuda.synchronize()
            fin = torch.isfinite(l1) & torch.isfinite(l2)
            d_out, d_lse = cos_diff(o1.float(), o2.float()), cos_diff(l1[fin], l2[fin])
            runs = []
            for i in range(args.reps):   # ABBA: whichever runs first after a pause may get a higher clock
                if i % 2:
                    o_t = bench(ours)
                    runs.append((bench(theirs), o_t))
                else:
                    runs.append((bench(theirs), bench(ours)))
            f_ms, o_ms = min(r[0] for r in runs), min(r[1] for r in runs)
            flops, nbytes = flops_bytes(cfg, sum(inp["seqlens"]))
            row = dict(s=cfg.s, h_q=cfg.h_q, s_q=cfg.s_q, varlen=cfg.varlen, flashmla_ms=f_ms, ms=o_ms,
                       ratio=f_ms / o_ms, backend=chosen, cos_diff_out=d_out, cos_diff_lse=d_lse,
                       tflops=flops / o_ms / 1e9, gbs=nbytes / o_ms / 1e6, runs=runs)
            print(f"s={cfg.s} h_q={cfg.h_q:3d} s_q={cfg.s_q} varlen={int(cfg.varlen)}: flashmla {f_ms:.4f} ms "
                  f"ours[{chosen}] {o_ms:.4f} ms ratio {f_ms / o_ms:.3f} cos_diff {d_out:.1e} "
                  f"runs {[(round(a, 4), round(b, 4)) for a, b in runs]}", flush=True)
            if args.timeline:
                from call_timeline import format_kernels, kernels_per_call
                row["timeline"] = {}
                for who, fn in (("flashmla", theirs), ("ours", ours)):
                    row["timeline"][who] = kernels_per_call(fn)
                    print(f"    timeline {who:8s} {format_kernels(row['timeline'][who])}", flush=True)
            key = f"{cfg.s},{cfg.h_q},{cfg.s_q},{int(cfg.varlen)}"
            if key in args.probe:
                pr = []
                for _ in range(2):
                    pr.append(("flashmla", probe(theirs)))
                    pr.append(("ours", probe(ours)))
                for who, p in pr:
                    print(f"    probe {who:8s} {p['ms_loop']:.4f} ms/call  SM {p['mhz']:.0f} MHz  {p['watts']:.0f} W  "
                          f"{p['temp']:.0f} C  {p['mcycles']:.3f} M SM cycles/call", flush=True)
                row["probe"] = pr
            rows.append(row)
            del inp, o1, o2, l1, l2
            torch.cuda.empty_cache()
    g = geomean(r["ratio"] for r in rows)
    print(f"geo-mean ratio (flashmla_ms / ours_ms): {g:.3f}; >= 1.00: {sum(r['ratio'] >= 1 for r in rows)}/{len(rows)}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            what="FlashMLA c2067be (built from source, sm_90a) vs flash_mla, same process, interleaved",
            device=torch.cuda.get_device_name(), date=time.strftime("%Y-%m-%d"),
            commit=os.environ.get("FLASH_MLA_COMMIT") or git_commit(), hopper_set=args.set, geomean=g, rows=rows),
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
