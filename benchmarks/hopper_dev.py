"""Device script for the Hopper Gluon kernel: correctness vs a float32 torch reference, then timings.

    PYTHONUNBUFFERED=1 python3 benchmarks/hopper_dev.py [--quick] [--no-bench]

Inputs follow FlashMLA's benchmark protocol (shuffled pages, NaN in every cache row past a sequence's end).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import traceback

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flash_mla import flash_mla_with_kvcache, get_mla_metadata  # noqa: E402


def make_inputs(lens, s_q, h_q, dtype, page=64, seed=0, pad_to=256):
    b = len(lens)
    seqlens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    pad = max(pad_to, math.ceil(max(lens) / pad_to) * pad_to)
    nblk = b * pad // page
    bt = torch.randperm(nblk, generator=torch.Generator().manual_seed(seed)).int().reshape(b, -1).cuda()
    gen = torch.Generator(device="cuda").manual_seed(seed)
    kc = torch.randn(nblk, page, 1, 576, dtype=dtype, device="cuda", generator=gen)
    q = torch.randn(b, s_q, h_q, 576, dtype=dtype, device="cuda", generator=gen)
    pos = torch.arange(pad, device="cuda")
    past = pos[None, :] >= seqlens[:, None]
    rows = (bt.long()[:, pos // page] * page + pos % page)[past]
    kc.view(-1, 576)[rows] = float("nan")
    # garbage past each sequence's last needed page (must never be used as an index)
    need = (seqlens + page - 1) // page
    col = torch.arange(bt.shape[1], device="cuda")
    bt = torch.where(col[None, :] >= need[:, None], torch.full_like(bt, 2147480000), bt)
    return q, kc, bt, seqlens


def reference(q, kc, bt, seqlens, scale, causal):
    b, s_q, h_q, d = q.shape
    out = torch.zeros(b, s_q, h_q, 512, dtype=torch.float32, device=q.device)
    lse = torch.full((b, h_q, s_q), float("inf"), dtype=torch.float32, device=q.device)
    for i in range(b):
        L = int(seqlens[i])
        if L == 0:
            continue
        pos = torch.arange(L, device=q.device)
        kv = kc.view(-1, 576)[bt[i].long()[pos // 64] * 64 + pos % 64].float()   # [L, 576]
        qi = q[i].float().reshape(s_q * h_q, d)
        s = qi @ kv.T * scale
        if causal:
            tok = torch.arange(s_q, device=q.device).repeat_interleave(h_q)
            s = s.masked_fill(pos[None, :] > (L - s_q + tok)[:, None], float("-inf"))
        l = torch.logsumexp(s, dim=-1)
        p = torch.exp(s - l[:, None]).nan_to_num(0.0)
        o = p @ kv[:, :512]
        out[i] = o.reshape(s_q, h_q, 512)
        lse[i] = l.reshape(s_q, h_q).T.masked_fill(torch.isneginf(l.reshape(s_q, h_q).T), float("inf"))
    return out, lse


def check(name, lens, s_q, h_q, dtype, causal, num_sm_parts=None, results=None):
    q, kc, bt, seqlens = make_inputs(lens, s_q, h_q, dtype)
    meta, nsp = get_mla_metadata(seqlens, s_q * h_q, 1, num_sm_parts=num_sm_parts)
    scale = 576 ** -0.5
    out, lse = flash_mla_with_kvcache(q, kc, bt, seqlens, 512, meta, nsp, scale, causal, backend="hopper")
    torch.cuda.synchronize()
    ref_o, ref_l = reference(q, kc, bt, seqlens, scale, causal)
    o = out.float()
    nan = bool(out.isnan().any() or lse.isnan().any())
    fin = torch.isfinite(ref_l)
    rel = ((o - ref_o).norm() / ref_o.norm().clamp_min(1e-30)).item()
    maxabs = (o - ref_o).abs().max().item()
    lse_err = (lse[fin] - ref_l[fin]).abs().max().item() if fin.any() else 0.0
    inf_ok = bool((lse[~fin] == ref_l[~fin]).all()) and bool((o.permute(0, 2, 1, 3)[~fin] == 0).all()) \
        if (~fin).any() else True
    a, bb = o.double().flatten(), ref_o.double().flatten()
    cos = (1 - (a @ bb) / (a.norm() * bb.norm()).clamp_min(1e-300)).item()
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    ok = (not nan) and rel < tol and lse_err < 1e-3 and inf_ok and cos < 1e-5
    print(f"[{'OK ' if ok else 'BAD'}] {name}: b={len(lens)} s_q={s_q} h_q={h_q} {str(dtype)[6:]} causal={causal} "
          f"parts={meta.shape[0]} splits={int(nsp[-1])} rel_l2={rel:.2e} max_abs={maxabs:.2e} cos={cos:.1e} "
          f"lse_err={lse_err:.2e} nan={nan} empty_rows_ok={inf_ok}", flush=True)
    if results is not None:
        results.append(dict(name=name, ok=ok, rel_l2=rel, max_abs=maxabs, lse_err=lse_err, cos=cos, nan=nan))
    return ok


def correctness(quick):
    res = []
    cases = [
        ("tiny", [1, 63, 64, 65, 130, 200], 1, 16, torch.bfloat16, False, None),
        ("tiny-causal-sq2", [2, 63, 64, 65, 130, 200], 2, 16, torch.bfloat16, True, None),
        ("zero-len", [0, 100, 0, 64], 1, 16, torch.bfloat16, False, None),
        ("many-splits", [5000, 3000, 64, 4097], 1, 32, torch.bfloat16, False, 132),
        ("many-splits-causal", [5000, 3000, 65, 4097], 2, 64, torch.float16, True, 132),
        ("h128-sq2", [4096] * 8, 2, 128, torch.bfloat16, True, None),
        ("h128-sq2-splits", [4096, 1000, 7000], 2, 128, torch.bfloat16, True, 132),
        ("fp16-h64", [777, 2048, 1], 1, 64, torch.float16, False, 66),
        ("h_q=8 (R<64)", [300, 129], 1, 8, torch.bfloat16, False, 16),
        ("h_q=48 s_q=3 causal", [300, 129, 3], 3, 48, torch.bfloat16, True, 16),
    ]
    if not quick:
        random.seed(0)
        lens = [max(int(random.normalvariate(4096, 2048)), 2) for _ in range(128)]
        cases.append(("protocol varlen", lens, 2, 64, torch.bfloat16, True, None))
    for c in cases:
        try:
            check(*c, results=res)
        except Exception:
            print(f"[ERR] {c[0]}:\n{traceback.format_exc()}", flush=True)
            res.append(dict(name=c[0], ok=False, error=traceback.format_exc()[-500:]))
    return res


_MODULE_DEFAULTS = {}   # (kernel kind, constant) -> its value before the first override


def set_cfg(cfg):
    """A launcher config, or ``"ws:NAME=V,..."`` / ``"pair:NAME=V,..."``: that kernel with module constants of
    ws_kernel / pair_kernel overridden (e.g. ``ws:PV_REGS=184``); ``"auto:NAME=V,..."``: the constant set in both
    ws_kernel and ws2_kernel (in whichever has it; ``ws2.NAME=V``: in that one only), the launcher's own choice of
    kernel; None restores the defaults."""
    import flash_mla.hopper.launcher as hl
    import flash_mla.hopper.pair_kernel as P
    import flash_mla.hopper.ws_kernel as W
    import flash_mla.hopper.ws2_kernel as W2
    mods = {"ws": (W, hl.WS, hl._launch_ws), "pair": (P, hl.PAIR, hl._launch_pair), "ws2": (W2, hl.WS2, hl._launch_ws2)}
    kind = cfg.split(":")[0] if isinstance(cfg, str) and ":" in cfg else None
    if _MODULE_DEFAULTS or kind:   # the launch cache's key does not cover the kernel modules' constants
        for _, _, launch in mods.values():
            launch.compiled.clear()
    for (mk, k), v in _MODULE_DEFAULTS.items():
        setattr(mods[mk][0], k, v)
    if kind:
        for mk in (("ws", "ws2") if kind == "auto" else (kind,)):
            mod = mods[mk][0]
            for kv in cfg.split(":", 1)[1].split(","):
                k, v = kv.split("=")
                if "." in k:   # "auto:ws2.PV_REGS=176": that kernel's constant only
                    only, k = k.split(".")
                    if only != mk:
                        continue
                if kind == "auto" and not hasattr(mod, k):   # a constant only one of the two kernels has
                    continue
                _MODULE_DEFAULTS.setdefault((mk, k), getattr(mod, k))
                setattr(mod, k, int(v))
        cfg = None if kind == "auto" else mods[kind][1]
    hl.CONFIG_OVERRIDE = cfg


def override(consts: str) -> None:
    """``set_cfg("auto:" + consts)`` for the other device scripts' ``--set`` (``NAME=V,...``; ``ws2.NAME=V`` for one
    kernel), printed so that their logs name it."""
    set_cfg(f"auto:{consts}")
    print(f"hopper module constants overridden: {consts}", flush=True)


def bench(backends, varlens=(False,), cfgs=(None,), hqs=(16, 32, 64, 128)):
    anchors = {}
    p = os.path.join(os.path.dirname(os.path.abspath(__file__)), "anchors", "flashmla_h100.json")
    if os.path.exists(p):
        for r in json.load(open(p))["rows"]:
            anchors[(r["s"], r["h_q"], r["s_q"], r["varlen"])] = r["ms"]
    rows = []
    b = 128
    for s_k in (4096, 8192):
        for varlen in varlens:
            random.seed(0)
            lens = [max(int(random.normalvariate(s_k, s_k / 2)), 2) if varlen else s_k for _ in range(b)]
            for h_q in hqs:
                for s_q in (1, 2):
                    q, kc, bt, seqlens = make_inputs(lens, s_q, h_q, torch.bfloat16)
                    meta, nsp = get_mla_metadata(seqlens, s_q * h_q, 1)
                    total = sum(lens)
                    flops = s_q * total * h_q * (576 + 512) * 2
                    nbytes = (total * 576 + b * s_q * h_q * 576 + b * s_q * h_q * 512) * 2
                    line = f"s_k={s_k} varlen={int(varlen)} h_q={h_q:3d} s_q={s_q}"
                    row = dict(s=s_k, h_q=h_q, s_q=s_q, varlen=varlen)
                    runs = [(be, None) for be in backends if be != "hopper"]
                    if "hopper" in backends:
                        runs = [("hopper", c) for c in cfgs] + runs
                    for be, cfg in runs:
                        set_cfg(cfg)
                        fn = lambda: flash_mla_with_kvcache(q, kc, bt, seqlens, 512, meta, nsp, None, True,
                                                            backend=be)
                        name = be if cfg is None else f"{be}{cfg}"
                        try:
                            ms = triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
                        except Exception as e:  # noqa: BLE001
                            print(f"{line} {name}: ERROR {e}", flush=True)
                            continue
                        row[name] = ms
                        if be == "hopper":
                            row["hopper"] = min(row.get("hopper", float("inf")), ms)
                        line += f" | {name} {ms:.4f} ms {nbytes / ms / 1e6:5.0f} GB/s {flops / ms / 1e9:4.0f} TF"
                    set_cfg(None)
                    fm = anchors.get((s_k, h_q, s_q, varlen))
                    if fm and "hopper" in row:
                        line += f" | flashmla {fm:.4f} ms (hopper/flashmla {row['hopper'] / fm:.2f}x)"
                        row["flashmla"] = fm
                    print(line, flush=True)
                    rows.append(row)
                    del q, kc
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--backends", default="hopper,triton")
    ap.add_argument("--varlen", action="store_true")
    ap.add_argument("--hq", default="16,32,64,128", help="h_q values to time")
    ap.add_argument("--cfgs", default="", help="hopper configs to time, ';'-separated: p_smem,overlap,tma3d or ss / ss2 / large / small")
    ap.add_argument("--check-cfgs", action="store_true", help="run the correctness cases under every --cfgs")
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__, flush=True)
    out_dir = os.environ.get("OUT", "device_out")
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    # hopper launcher configs (p_smem, overlap), e.g. "1,1;0,0"
    import flash_mla.hopper.launcher as _hl
    _named = {"ss": _hl.SEESAW, "ss2": _hl.SEESAW2, "ss3": _hl.SEESAW3, "ws": _hl.WS, "ws2": _hl.WS2, "pair": _hl.PAIR, "large": _hl.CONFIG_LARGE, "small": _hl.CONFIG_SMALL}
    cfgs = [(_named[c] if c in _named else c if c.startswith(("ws:", "pair:", "ws2:", "auto:")) else tuple(bool(int(x)) for x in c.split(",")))
            for c in args.cfgs.split(";") if c] or [None]
    res = []
    if not args.no_check:
        for cfg in (cfgs if args.check_cfgs else [None]):
            print(f"== correctness, config {cfg or 'default'}", flush=True)
            set_cfg(cfg)
            res += correctness(args.quick)
        set_cfg(None)
    print(f"correctness: {sum(r['ok'] for r in res)}/{len(res)} ok ({time.time() - t0:.0f}s)", flush=True)
    rows = [] if args.no_bench else bench(args.backends.split(","), (False, True) if args.varlen else (False,), cfgs,
                                         tuple(int(x) for x in args.hq.split(",")))
    json.dump(dict(correctness=res, bench=rows), open(os.path.join(out_dir, "hopper_dev.json"), "w"), indent=1)
