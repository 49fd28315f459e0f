"""Device timeline of the benchmark protocol's loop (diagnostics): where a timed call's time goes between the
start and end events, kernel by kernel, and whether the GPU waits for the host.

    python3 benchmarks/call_timeline.py [s_k,h_q,s_q,varlen ...]   (default: 8192,16,1,0 8192,128,1,0 8192,128,2,0)

Runs do_bench's loop body (L2 flush, start event, one ``flash_mla_with_kvcache`` call, end event) 30 times under
torch.profiler (CUPTI) after warm-up and prints medians over the iterations of: the flush memset, the gap from its
end to the attention kernel's start, the attention kernel, the gap to the combine kernel's start, the combine
kernel, and the host's launch of the attention kernel relative to the flush's end on the GPU (> 0: the GPU idled
waiting for the host), next to the event-timed call.
"""
import statistics
import sys

import torch
from torch.profiler import ProfilerActivity, profile
from triton import runtime

from flash_mla.bench import Config, decode_call


def _kind(name):
    if "mla_decode" in name:
        return "attn"
    if "combine" in name:
        return "comb"
    if "elementwise" in name or "fill" in name.lower() or "memset" in name.lower():
        return "flush"
    return None


def timeline(s_k, h_q, s_q, varlen, n=30):
    fn, _, _ = decode_call(Config(s_k, h_q, s_q, bool(varlen)), torch.bfloat16, "cuda")
    cache = runtime.driver.active.get_empty_cache_for_benchmark()
    for _ in range(20):
        runtime.driver.active.clear_cache(cache)
        fn()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for s, e in ev:
            runtime.driver.active.clear_cache(cache)
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
    timed = statistics.median(s.elapsed_time(e) * 1e3 for s, e in ev)
    gpu = []
    launches = []
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            k = _kind(e.name)
            if k:
                gpu.append((e.time_range.start, e.time_range.end, k))
        elif "LaunchKernel" in e.name or "cuLaunch" in e.name:
            launches.append(e.time_range.start)
    gpu.sort()
    launches.sort()
    # three launches per iteration on the host (flush, attention, combine): the attention kernel's is the second
    attn_launch = launches[1::3] if len(launches) == 3 * n else [float("nan")] * n
    rows = []
    i = 0
    while i < len(gpu):
        if gpu[i][2] == "flush" and i + 2 < len(gpu) and gpu[i + 1][2] == "attn" and gpu[i + 2][2] == "comb":
            f, a, c = gpu[i], gpu[i + 1], gpu[i + 2]
            la = attn_launch[len(rows)] if len(rows) < len(attn_launch) else float("nan")
            rows.append(dict(flush=f[1] - f[0], gap_fa=a[0] - f[1], attn=a[1] - a[0], gap_ac=c[0] - a[1],
                             comb=c[1] - c[0], span=c[1] - f[1], host_late=la - f[1]))
            i += 3
        else:
            i += 1
    if not rows or len(launches) != 3 * n:
        names = sorted({e.name[:70] for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})
        print(f"  (matched {len(rows)} iterations, {len(launches)} host launches; device kernels: {names})")
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]} if rows else {}
    print(f"s_k={s_k} h_q={h_q} s_q={s_q} varlen={varlen}: event-timed call {timed:.1f} us; medians over "
          f"{len(rows)} iterations (us): flush {med.get('flush', 0):.1f} | gap flush->attention "
          f"{med.get('gap_fa', 0):.1f} | attention {med.get('attn', 0):.1f} | gap -> combine {med.get('gap_ac', 0):.1f} "
          f"(negative: PDL overlap) | combine {med.get('comb', 0):.1f} | flush end -> combine end {med.get('span', 0):.1f}"
          f" | host launch of attention after flush end {med.get('host_late', 0):.1f}")


def kernels_per_call(fn, n=30):
    """Kernel-level timeline of any callable under the protocol's loop (L2 flush, then ``fn()``), ``n`` times:
    medians over the iterations of each kernel's duration (in launch order, by a short name), of the gap from the
    flush's end to the first kernel, of the gaps between consecutive kernels (negative: overlap, e.g. PDL) and of
    the span from the flush's end to the last kernel's end, in us. Works for any kernels (FlashMLA's too), unlike
    ``timeline``, which needs ours."""
    cache = runtime.driver.active.get_empty_cache_for_benchmark()
    for _ in range(10):
        runtime.driver.active.clear_cache(cache)
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            runtime.driver.active.clear_cache(cache)
            fn()
        torch.cuda.synchronize()
    ev = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                if e.device_type == torch.autograd.DeviceType.CUDA)
    iters, cur = [], None
    for st, en, name in ev:
        if "fill" in name.lower() or "memset" in name.lower():   # the flush (zero_ of the cache buffer)
            if cur and len(cur) > 1:
                iters.append(cur)
            cur = [(st, en, "flush")]
        elif cur is not None:
            cur.append((st, en, name))
    if cur and len(cur) > 1:
        iters.append(cur)
    shapes = {tuple(k[2] for k in it) for it in iters}
    if not iters or len(shapes) != 1:
        return dict(error=f"{len(iters)} iterations, {len(shapes)} kernel sequences")
    names = [k[2].split("<")[0].split("(")[0].replace("void ", "")[:40] for k in iters[0][1:]]
    out = dict(kernels=names, iters=len(iters))
    k = len(names)
    out["dur"] = [statistics.median(it[j + 1][1] - it[j + 1][0] for it in iters) for j in range(k)]
    out["gap"] = [statistics.median(it[j + 1][0] - it[j][1] for it in iters) for j in range(k)]
    out["span"] = statistics.median(it[-1][1] - it[0][1] for it in iters)
    return out


def format_kernels(t):
    if "error" in t:
        return t["error"]
    return " | ".join(f"{nm} {d:.1f} (gap {g:+.1f})" for nm, d, g in zip(t["kernels"], t["dur"], t["gap"])) + \
        f" | flush end -> last end {t['span']:.1f} us"


def main():
    cfgs = sys.argv[1:] or ["8192,16,1,0", "8192,128,1,0", "8192,128,2,0"]
    with torch.inference_mode():
        for c in cfgs:
            timeline(*(int(x) for x in c.split(",")))


if __name__ == "__main__":
    main()
