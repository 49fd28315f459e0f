"""FlashMLA's decode benchmark matrix, timed with FlashMLA's protocol.

    python -m flash_mla.bench [--backend auto|hopper|triton|reference] [--dtype bf16|fp16]
                              [--s 4096 8192] [--h-q 16 32 64 128] [--s-q 1 2] [--varlen 0 1]
                              [--baseline benchmarks/anchors/flashmla_h100.json] [--json out.json]
                              [--plot out.png] [--check]

The protocol is the one written in the anchor file (``benchmarks/anchors/flashmla_h100.json``, "protocol"):

- matrix: b=128, s_k in {4096, 8192}, h_q in {16, 32, 64, 128}, s_q in {1, 2}, varlen in {False, True};
  causal, h_kv=1, d=576, dv=512, page size 64;
- varlen lengths: ``random.seed(0)``; ``L_i = max(int(random.normalvariate(s_k, s_k / 2)), s_q)``
  (fixed length ``s_k`` otherwise);
- pages: ``max_seqlen_pad = ceil(max(L) / 256) * 256``, ``b * max_seqlen_pad / 64`` pages, block table = a
  random permutation of all page ids (``torch.Generator`` seeded with 0), shape ``[b, max_seqlen_pad / 64]``;
- q and k_cache random normal; cache rows past each length are set to NaN (as FlashMLA's test does: they
  must never influence the result);
- timer: ``triton.testing.do_bench(fn, warmup=25, rep=200, return_mode='median')``, ``fn`` = one
  ``flash_mla_with_kvcache`` call, the metadata computed once outside;
- FLOPs ``s_q * total_seqlens * h_q * (d + dv) * 2``;
  bytes ``(total_seqlens * h_kv * d + b * s_q * h_q * d + b * s_q * h_q * dv) * 2``.

With ``--baseline FILE`` (the anchor file's format: ``rows`` with s, h_q, s_q, varlen, ms, triton_ms) each row
gets ``ratio = baseline_ms / ms`` (> 1: faster than the baseline) and, where the baseline has ``triton_ms``,
``ratio_triton = triton_ms / ms``; the geometric means close the table.

Without CUDA this runs a small CPU demo (tiny batch and lengths; the reference backend, plus the Triton
backend under ``TRITON_INTERPRET=1``): it shows that the code runs, it is not a benchmark.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

D, DV, H_KV, PAGE_SIZE = 576, 512, 1, 64
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
BACKEND_CHOICES = ("auto", "hopper", "triton", "reference")
# Benchmark matrix (FlashMLA's) and the CPU demo's tiny one.
MATRIX_S, MATRIX_H_Q, MATRIX_S_Q, MATRIX_VARLEN, MATRIX_B = (4096, 8192), (16, 32, 64, 128), (1, 2), (False, True), 128
DEMO_S, DEMO_H_Q, DEMO_B = (128,), (16,), 2
CHECK_TOL = 1e-5   # FlashMLA's test: 1 - cos_sim < 1e-5 on out and lse


@dataclass(frozen=True)
class Config:
    s: int            # mean KV length s_k
    h_q: int
    s_q: int
    varlen: bool
    b: int = MATRIX_B
    causal: bool = True

    @property
    def key(self) -> tuple:
        return (self.s, self.h_q, self.s_q, self.varlen)


def matrix(s=MATRIX_S, h_q=MATRIX_H_Q, s_q=MATRIX_S_Q, varlen=MATRIX_VARLEN, b=MATRIX_B) -> list[Config]:
    """The configs in FlashMLA's order (s_k, h_q, s_q, varlen nested outermost first)."""
    return [Config(sk, hq, sq, bool(vl), b) for sk in s for hq in h_q for sq in s_q for vl in varlen]


# ---------------------------------------------------------------- inputs (the protocol)

def gen_seqlens(cfg: Config, seed: int = 0) -> list[int]:
    """KV lengths: ``s`` each, or (varlen) ``max(int(normalvariate(s, s/2)), s_q)`` after ``random.seed(seed)``."""
    if not cfg.varlen:
        return [cfg.s] * cfg.b
    rng = random.Random(seed)   # same stream as random.seed(seed); leaves the global state alone
    return [max(int(rng.normalvariate(cfg.s, cfg.s / 2)), cfg.s_q) for _ in range(cfg.b)]


def pad_seqlen(max_seqlen: int) -> int:
    """``ceil(max_seqlen / 256) * 256``."""
    return -(-max_seqlen // 256) * 256


def make_block_table(b: int, max_seqlen: int, page_size: int = PAGE_SIZE, seed: int = 0) -> torch.Tensor:
    """``[b, max_seqlen_pad / page_size]`` int32: a random permutation of all ``b * max_seqlen_pad / page_size`` pages."""
    pages_per_seq = pad_seqlen(max_seqlen) // page_size
    perm = torch.randperm(b * pages_per_seq, generator=torch.Generator().manual_seed(seed))
    return perm.to(torch.int32).reshape(b, pages_per_seq)


def poison_tail(k_cache: torch.Tensor, block_table: torch.Tensor, cache_seqlens: torch.Tensor) -> None:
    """Write NaN into every cache row a sequence owns past its length (FlashMLA's test does the same)."""
    page_size = k_cache.shape[1]
    pos = torch.arange(block_table.shape[1] * page_size, device=k_cache.device)
    past = pos[None, :] >= cache_seqlens.to(k_cache.device).long()[:, None]
    rows = (block_table.to(k_cache.device).long()[:, pos // page_size] * page_size + pos % page_size)[past]
    k_cache.view(-1, k_cache.shape[-1])[rows] = float("nan")


def make_inputs(cfg: Config, dtype: torch.dtype = torch.bfloat16, device="cpu", seed: int = 0,
                nan_tail: bool = True) -> dict:
    """The protocol's inputs: q, k_cache, block_table, cache_seqlens (on ``device``) and the lengths as a list."""
    device = torch.device(device)
    lens = gen_seqlens(cfg, seed)
    block_table = make_block_table(cfg.b, max(lens), PAGE_SIZE, seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(cfg.b, cfg.s_q, cfg.h_q, D, dtype=dtype, device=device, generator=gen)
    k_cache = torch.randn(block_table.numel(), PAGE_SIZE, H_KV, D, dtype=dtype, device=device, generator=gen)
    cache_seqlens = torch.tensor(lens, dtype=torch.int32, device=device)
    block_table = block_table.to(device)
    if nan_tail:
        poison_tail(k_cache, block_table, cache_seqlens)
    return dict(q=q, k_cache=k_cache, block_table=block_table, cache_seqlens=cache_seqlens, seqlens=lens)


def flops_bytes(cfg: Config, total_seqlens: int, elem_bytes: int = 2) -> tuple[int, int]:
    """The protocol's FLOPs and bytes for one call."""
    flops = cfg.s_q * total_seqlens * cfg.h_q * (D + DV) * 2
    nbytes = (total_seqlens * H_KV * D + cfg.b * cfg.s_q * cfg.h_q * D + cfg.b * cfg.s_q * cfg.h_q * DV) * elem_bytes
    return flops, nbytes


# ---------------------------------------------------------------- baseline and ratios

def load_baseline(path) -> dict:
    """``{(s, h_q, s_q, varlen): row}`` from an anchor-format JSON file (top-level ``rows``)."""
    data = json.loads(Path(path).read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    return {(int(r["s"]), int(r["h_q"]), int(r["s_q"]), bool(r["varlen"])): r for r in rows}


def add_ratios(row: dict, baseline: dict | None) -> dict:
    """Adds baseline_ms, ratio (= baseline_ms / ms), triton_ms and ratio_triton (= triton_ms / ms) to ``row``."""
    ref = (baseline or {}).get((row["s"], row["h_q"], row["s_q"], row["varlen"]))
    base_ms = ref.get("ms") if ref else None
    triton_ms = ref.get("triton_ms") if ref else None
    ms = row.get("ms")
    row["baseline_ms"] = base_ms
    row["ratio"] = base_ms / ms if base_ms and ms else None
    row["triton_ms"] = triton_ms
    row["ratio_triton"] = triton_ms / ms if triton_ms and ms else None
    return row


def geomean(values) -> float | None:
    vals = [v for v in values if v is not None and v > 0]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


# ---------------------------------------------------------------- timing and checking

def time_ms(fn, device: torch.device, cpu_reps: int = 3) -> float:
    """Median ms of ``fn``: Triton's do_bench on CUDA (the protocol); a wall-clock median on CPU (demo only)."""
    if device.type == "cuda":
        import triton.testing
        return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
    fn()
    times = []
    for _ in range(cpu_reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cos_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """FlashMLA's metric: ``1 - 2 <x, y> / (|x|^2 + |y|^2)`` in float64."""
    x, y = x.double(), y.double()
    return 1 - 2 * (x * y).sum().item() / max((x * x + y * y).sum().item(), 1e-12)


def check_subset(inputs: dict, out: torch.Tensor, lse: torch.Tensor, causal: bool = True, n: int = 4) -> dict:
    """Compare ``out``/``lse`` with the float32 reference (fp32 inputs) on ``n`` sequences spread over the batch.

    FlashMLA's metric (``cos_diff`` < 1e-5) and the relative L2 error of out, each the worst over those sequences.
    Only the pages of those sequences are converted to float32, so this stays cheap at b=128.
    """
    from flash_mla.reference import mla_decode_reference

    b = out.shape[0]
    m = min(n, b)
    idx = sorted({round(i * (b - 1) / max(m - 1, 1)) for i in range(m)})   # first and last always in
    sel = torch.tensor(idx, device=out.device)
    sub_bt = inputs["block_table"][sel]
    sub_cache = inputs["k_cache"][sub_bt.flatten().long()].float()
    sub_bt = torch.arange(sub_bt.numel(), dtype=torch.int32, device=out.device).reshape(sub_bt.shape)
    ref_out, ref_lse = mla_decode_reference(inputs["q"][sel].float(), sub_cache, sub_bt,
                                            inputs["cache_seqlens"][sel], DV, D ** -0.5, causal)
    o, l_ = out[sel].float(), lse[sel]
    finite = bool(torch.isfinite(o).all() and torch.isfinite(l_).all())
    # Per sequence, worst kept: pooled over the subset, a short varlen sequence (large |out|) would dominate.
    d_out = max(cos_diff(o[i], ref_out[i]) for i in range(len(idx)))
    d_lse = max(cos_diff(l_[i], ref_lse[i]) for i in range(len(idx)))
    rel = max(((o[i].double() - ref_out[i].double()).norm() / ref_out[i].double().norm().clamp_min(1e-30)).item()
              for i in range(len(idx)))
    return dict(check_seqs=len(idx), cos_diff_out=d_out, cos_diff_lse=d_lse, rel_l2_out=rel,
                check_ok=finite and d_out < CHECK_TOL and d_lse < CHECK_TOL)


def decode_call(cfg: Config, dtype: torch.dtype, device, backend: str | None = None, seed: int = 0):
    """The protocol's inputs for ``cfg`` and one decode call on them (metadata computed once, outside the call,
    as FlashMLA's benchmark does). Returns (fn, inputs, chosen backend)."""
    from flash_mla import flash_mla_with_kvcache, get_mla_metadata, resolve_backend

    inp = make_inputs(cfg, dtype, torch.device(device), seed)
    q, kc, bt, sl = inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"]
    chosen = resolve_backend(q, kc, DV, backend)
    meta, splits = get_mla_metadata(sl, cfg.s_q * cfg.h_q // H_KV, H_KV)

    def fn():
        return flash_mla_with_kvcache(q, kc, bt, sl, DV, meta, splits, causal=cfg.causal, backend=chosen)

    return fn, inp, chosen


def run_config(cfg: Config, dtype: torch.dtype, device, backend: str | None = None, check: bool = False,
               seed: int = 0, cpu_reps: int = 3) -> dict:
    """Times one config; returns a result row (s, h_q, s_q, varlen, ms, tflops, gbs, backend, [check fields])."""
    device = torch.device(device)
    with torch.inference_mode():
        fn, inp, chosen = decode_call(cfg, dtype, device, backend, seed)
        q = inp["q"]
        out, lse = fn()
        ms = time_ms(fn, device, cpu_reps)
        flops, nbytes = flops_bytes(cfg, sum(inp["seqlens"]), q.element_size())
        row = dict(s=cfg.s, h_q=cfg.h_q, s_q=cfg.s_q, varlen=cfg.varlen, b=cfg.b, ms=ms,
                   tflops=flops / ms / 1e9, gbs=nbytes / ms / 1e6, backend=chosen)
        if check:
            row.update(check_subset(inp, out, lse, cfg.causal))
    return row


# ---------------------------------------------------------------- report

def git_commit() -> str:
    """FLASH_MLA_COMMIT if set (the device copy of the tree may carry a stale .git), else git's HEAD."""
    if os.environ.get("FLASH_MLA_COMMIT"):
        return os.environ["FLASH_MLA_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.multi_processor_count} SMs)"
    return f"CPU ({os.cpu_count()} cores), demo only"


def build_report(rows: list[dict], *, device: str, dtype: str, backend: str, baseline: str | None = None,
                 demo: bool = False) -> dict:
    """The ``--json`` document: metadata, rows, geometric means of the ratios."""
    import triton
    return dict(device=device, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                dtype=dtype, backend=backend, commit=git_commit(), torch=torch.__version__, triton=triton.__version__,
                demo=demo, baseline=baseline, geomean_ratio=geomean(r.get("ratio") for r in rows),
                geomean_ratio_triton=geomean(r.get("ratio_triton") for r in rows), rows=rows)


def _fmt(v, spec):
    """``format(v, spec)``, or a dash padded to the spec's width for a missing value."""
    if v is None:
        width = "".join(c for c in spec.split(".")[0] if c.isdigit())
        return "-".rjust(int(width) if width else 1)
    return format(v, spec)


def format_table(rows: list[dict]) -> str:
    """The compact final table, one line per config, the geometric means last."""
    with_triton = any(r.get("triton_ms") for r in rows)
    with_check = any("check_ok" in r for r in rows)
    head = f"{'s':>5} {'h_q':>4} {'s_q':>3} {'varlen':>6} {'backend':>9} {'ms':>8} {'TFLOPS':>7} {'GB/s':>6} " \
           f"{'anchor_ms':>9} {'ratio':>6}"
    head += f" {'triton_ms':>9} {'vs_trit':>7}" if with_triton else ""
    head += f" {'check':>5}" if with_check else ""
    lines = [head]
    for r in rows:
        line = (f"{r['s']:>5} {r['h_q']:>4} {r['s_q']:>3} {str(r['varlen']):>6} {r.get('backend', '?'):>9} "
                f"{_fmt(r['ms'], '8.4f')} {_fmt(r['tflops'], '7.1f')} {_fmt(r['gbs'], '6.0f')} "
                f"{_fmt(r.get('baseline_ms'), '9.4f')} {_fmt(r.get('ratio'), '6.3f')}")
        if with_triton:
            line += f" {_fmt(r.get('triton_ms'), '9.4f')} {_fmt(r.get('ratio_triton'), '7.3f')}"
        if with_check:
            line += f" {('ok' if r.get('check_ok') else 'FAIL'):>5}"
        lines.append(line)
    g, gt = geomean(r.get("ratio") for r in rows), geomean(r.get("ratio_triton") for r in rows)
    lines.append(f"geo-mean ratio (anchor_ms / ms): {_fmt(g, '.3f')}"
                 + (f"   geo-mean vs triton (triton_ms / ms): {_fmt(gt, '.3f')}" if with_triton else ""))
    return "\n".join(lines)


def plot(rows: list[dict], path: str, title: str = "") -> bool:
    """GB/s per config (ours and, where known, the baseline's); False (with a note) if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; skipping --plot (pip install 'flash_mla[plot]')")
        return False
    labels = [f"{r['s']}/{r['h_q']}/{r['s_q']}{'/v' if r['varlen'] else ''}" for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows)), 4.5))
    ax.bar([x - 0.2 for x in xs], [r["gbs"] for r in rows], width=0.4, label="flash_mla (this run)")
    base = [(r["gbs"] * r["ms"] / r["baseline_ms"]) if r.get("baseline_ms") else 0 for r in rows]
    if any(base):
        ax.bar([x + 0.2 for x in xs], base, width=0.4, label="baseline")
    ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("GB/s")
    ax.set_xlabel("s_k / h_q / s_q (/v = varlen)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m flash_mla.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default=None, choices=BACKEND_CHOICES, help="default: auto (or FLASH_MLA_BACKEND)")
    p.add_argument("--dtype", default="bf16", choices=tuple(DTYPES))
    p.add_argument("--s", type=int, nargs="+", help="subset of s_k (4096 8192)")
    p.add_argument("--h-q", type=int, nargs="+", help="subset of h_q (16 32 64 128)")
    p.add_argument("--s-q", type=int, nargs="+", help="subset of s_q (1 2)")
    p.add_argument("--varlen", type=_parse_bool, nargs="+", help="subset of varlen (0 1 / false true)")
    p.add_argument("--b", type=int, default=None, help=f"batch size (default {MATRIX_B}; CPU demo {DEMO_B})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", help="anchor-format JSON (rows with s, h_q, s_q, varlen, ms, triton_ms)")
    p.add_argument("--json", dest="json_out", help="write the results here")
    p.add_argument("--plot", help="write a PNG of GB/s per config (needs matplotlib)")
    p.add_argument("--check", action="store_true", help="also compare each config with the reference (subset)")
    p.add_argument("--cpu", action="store_true", help="run the CPU demo even where CUDA is available")
    return p.parse_args(argv)


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "t", "yes", "y"):
        return True
    if t in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def demo_backends(requested: str | None) -> list[str]:
    """Backends the CPU demo runs: the one asked for, else reference (+ triton under TRITON_INTERPRET=1)."""
    requested = requested or os.environ.get("FLASH_MLA_BACKEND")
    if requested and requested != "auto":
        return [requested]
    return ["reference"] + (["triton"] if os.environ.get("TRITON_INTERPRET", "0") == "1" else [])


def main(argv=None) -> int:
    args = parse_args(argv)
    dtype = DTYPES[args.dtype]
    demo = args.cpu or not torch.cuda.is_available()
    device = torch.device("cpu" if demo else "cuda")
    baseline = load_baseline(args.baseline) if args.baseline else None
    if demo:
        print("=" * 78)
        print("CPU DEMO: no CUDA device, so this only shows that the benchmark code runs, on a tiny batch")
        print("(b=%d, s_k=%s). It is NOT a benchmark; its times mean nothing. Run on a GPU for numbers."
              % (args.b or DEMO_B, list(args.s or DEMO_S)))
        print("=" * 78)
        cfgs = matrix(args.s or DEMO_S, args.h_q or DEMO_H_Q, args.s_q or MATRIX_S_Q,
                      args.varlen or MATRIX_VARLEN, args.b or DEMO_B)
        backends = demo_backends(args.backend)
        check = True   # cheap at this size, and the point of a demo
    else:
        cfgs = matrix(args.s or MATRIX_S, args.h_q or MATRIX_H_Q, args.s_q or MATRIX_S_Q,
                      args.varlen or MATRIX_VARLEN, args.b or MATRIX_B)
        backends = [args.backend]
        check = args.check
    dev_name = device_name(device)
    print(f"device: {dev_name}  dtype: {args.dtype}  commit: {git_commit()}  configs: {len(cfgs)}", flush=True)

    rows, failed = [], False
    for backend in backends:
        for cfg in cfgs:
            row = add_ratios(run_config(cfg, dtype, device, backend, check, args.seed), baseline)
            rows.append(row)
            msg = (f"s={cfg.s} h_q={cfg.h_q} s_q={cfg.s_q} varlen={cfg.varlen} [{row['backend']}]: "
                   f"{row['ms']:.4f} ms, {row['tflops']:.1f} TFLOPS, {row['gbs']:.0f} GB/s")
            if row.get("ratio") is not None:
                msg += f", anchor {row['baseline_ms']:.4f} ms, ratio {row['ratio']:.3f}"
            if row.get("ratio_triton") is not None:
                msg += f", vs triton {row['ratio_triton']:.3f}"
            if "check_ok" in row:
                failed |= not row["check_ok"]
                msg += (f", check {'ok' if row['check_ok'] else 'FAIL'} (1-cos out {row['cos_diff_out']:.1e}, "
                        f"lse {row['cos_diff_lse']:.1e}; rel L2 out {row['rel_l2_out']:.1e})")
            print(msg, flush=True)

    backend_label = ",".join(sorted({r["backend"] for r in rows}))
    if args.json_out:
        report = build_report(rows, device=dev_name, dtype=args.dtype, backend=backend_label,
                              baseline=args.baseline, demo=demo)
        report["backend_requested"] = args.backend or os.environ.get("FLASH_MLA_BACKEND") or "auto"
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json_out}")
    if args.plot:
        if plot(rows, args.plot, f"flash_mla {backend_label} {args.dtype} on {dev_name}"):
            print(f"wrote {args.plot}")
    print()
    if demo:
        print("CPU DEMO (not a benchmark):")
    print(format_table(rows))
    if failed:
        print("CHECK FAILED for at least one config", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
