"""Compile the Hopper kernel for sm_90a without a GPU and report its resources (used by tests and by hand).

    python3 -m flash_mla.hopper.compile_check
"""
from __future__ import annotations

import re

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource

from . import cluster as CL
from . import kernel as K

SMEM_LIMIT = 232448  # 227 KB opt-in shared memory per block on H100


def _sig(dtype_str: str, layout, kernel=K.mla_decode_kernel, v_box: int = K.HEAD_DIM_V // K.CHUNK,
         q_tma: bool = False) -> dict:
    """Argument types of ``kernel`` (in its parameter order) for bf16/fp16 and the cache's TMA layout
    (``v_box``: 64-column tiles per box of the chunk-major latent descriptor; ``q_tma``: the ws kernels' ``q_desc``
    is Q's 1 x 64 x 64-box descriptor, else the ``k_desc`` placeholder the launcher passes)."""
    ptr = f"*{dtype_str}"
    desc = f"tensordesc<{dtype_str}[{K.PAGE}, {K.CHUNK}],{layout!r}>"
    nv = v_box
    layout3 = gl.NVMMASharedLayout.get_default_for([nv, K.PAGE, K.CHUNK], _GL[dtype_str])
    vdesc = f"tensordesc<{dtype_str}[{nv}, {K.PAGE}, {K.CHUNK}],{layout3!r}>"
    q_layout3 = gl.NVMMASharedLayout.get_default_for([1, K.BLOCK_M, K.CHUNK], _GL[dtype_str])
    qdesc = f"tensordesc<{dtype_str}[1, {K.BLOCK_M}, {K.CHUNK}],{q_layout3!r}>" if q_tma else desc
    types = {
        "q_ptr": ptr, "stride_qb": "i64", "stride_qs": "i64", "stride_qh": "i64",
        "k_desc": desc, "v_desc": vdesc, "q_desc": qdesc,
        "bt_ptr": "*i32", "stride_bt": "i64",
        "seqlens_ptr": "*i32", "meta_ptr": "*i32", "num_splits_ptr": "*i32",
        "out_ptr": ptr, "lse_ptr": "*fp32",
        "oacc_ptr": "*fp32", "stride_oacc_b": "i64", "stride_oacc_r": "i64",
        "lacc_ptr": "*fp32", "stride_lacc_b": "i64",
        "sm_scale_log2": "fp32",
        "R": "i32", "H_Q": "i32", "S_Q": "i32",
        "trace_ptr": "*i64",
    }
    return {name: types.get(name, "constexpr") for name in kernel.arg_names}


_GL = {"bf16": gl.bfloat16, "fp16": gl.float16}


# Arguments Triton's JIT specialises as divisible by 16 in the launches we make (16-byte aligned tensors, strides of
# the standard layouts: multiples of 576 or 64 elements): without this, the build differs from the launched one
# (e.g. Q staged with 2-byte instead of 16-byte loads).
_DIVISIBLE = ("q_ptr", "stride_qb", "stride_qs", "stride_qh", "bt_ptr", "seqlens_ptr", "meta_ptr", "num_splits_ptr",
              "out_ptr", "lse_ptr", "oacc_ptr", "stride_oacc_b", "stride_oacc_r", "lacc_ptr", "trace_ptr")


def _compile(kernel, dtype_str: str, consts: dict, options: dict, v_box: int = K.HEAD_DIM_V // K.CHUNK):
    """``kernel`` compiled for sm_90a with the cache's TMA layout for ``dtype_str`` (no GPU needed), with the
    divisibility the launch specialises (``_DIVISIBLE``)."""
    layout = gl.NVMMASharedLayout.get_default_for([K.PAGE, K.CHUNK], _GL[dtype_str])
    consts = {"BLOCK_M": K.BLOCK_M, "PAGE": K.PAGE, "D": K.HEAD_DIM, "DV": K.HEAD_DIM_V, "CHUNK": K.CHUNK, **consts}
    names = kernel.arg_names
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in _DIVISIBLE if n in names}
    src = GluonASTSource(kernel, _sig(dtype_str, layout, kernel, v_box, bool(consts.get("Q_TMA"))), consts, attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


def _compile_twice(kernel, dtype_str: str, consts: dict, options: dict, v_box: int, constants):
    """``_compile`` of a kernel with inline PTX on shared-memory addresses, as the launcher builds it:
    ``cluster.compile_twice`` (the constants zeroed in ``consts``)."""
    return CL.compile_twice(lambda c: _compile(kernel, dtype_str, c, options, v_box=v_box), consts, constants,
                            kernel.__name__)


def compile_sm90(dtype_str: str = "bf16", causal: bool = True, p_smem: bool = True, overlap: bool = True,
                 tma3d: bool = False):
    consts = {"CAUSAL": causal, "P_SMEM": p_smem, "OVERLAP": overlap, "TMA3D": tma3d, "num_warps": K.NUM_WARPS}
    return _compile(K.mla_decode_kernel, dtype_str, consts, {"num_warps": K.NUM_WARPS})


def compile_sm90_ws(dtype_str: str = "bf16", causal: bool = True, **overrides):
    """The warp-specialized kernel (``ws_kernel``): 4-warp softmax partition + two 4-warp P.V partitions."""
    from . import ws_kernel as W
    consts = {"TRACE": 0, "CAUSAL": causal, "num_warps": W.NUM_WARPS, "PV_REGS": W.PV_REGS,
              "LAZY": int(W.LAZY), "NAMED": int(W.NAMED), "Q_TMA": int(W.Q_TMA), "PDL": int(W.PDL), **overrides}
    return _compile(W.mla_decode_ws_kernel, dtype_str, consts, {"num_warps": W.NUM_WARPS, "maxnreg": W.MAXNREG})


def compile_sm90_ws2(dtype_str: str = "bf16", causal: bool = True, **overrides):
    """The two-softmax-warpgroup kernel (``ws2_kernel``): 2 softmax + 2 P.V partitions of 4 warps."""
    from . import ws2_kernel as W2
    consts = {"TRACE": 0, "CAUSAL": causal, "num_warps": W2.NUM_WARPS, "PV_REGS": W2.PV_REGS,
              "SM_REGS": W2.SM_REGS, "CW": int(W2.CHUNK_WAIT), "LAZY": int(W2.LAZY),
              "NAMED": int(W2.NAMED), "OWN": int(W2.OWN or 0), "MC": int(W2.MC), "Q_TMA": int(W2.Q_TMA),
              "PDL": int(W2.PDL), "ASM_S": int(W2.ASM_S), "ASM_PV": int(W2.ASM_PV), **overrides}
    if consts["MC"]:   # as the launcher: no Q by TMA and no PDL in 2-CTA clusters
        if "Q_TMA" not in overrides:
            consts["Q_TMA"] = 0
        consts["PDL"] = 0
        consts["ASM_S"] = 0
        consts["ASM_PV"] = 0
    v_box = K.HEAD_DIM_V // K.CHUNK // (consts["CW"] or 1)
    opts = {"num_warps": W2.NUM_WARPS, "maxnreg": W2.MAXNREG}
    consts = {**CL.MC_ZERO, **W2.ASM_ZERO, **consts}
    if consts.get("MC"):   # two compiles, as the launcher does (cluster.mc_constants)
        return _compile_twice(W2.mla_decode_ws2_kernel, dtype_str, consts, opts, v_box,
                              lambda k: CL.mc_constants(k, consts["CW"]))
    if consts.get("ASM_S") or consts.get("ASM_PV"):   # two compiles, as the launcher does (ws2_kernel.asm_constants)
        return _compile_twice(W2.mla_decode_ws2_kernel, dtype_str, consts, opts, v_box, W2.asm_constants)
    return _compile(W2.mla_decode_ws2_kernel, dtype_str, consts, opts, v_box=v_box)


def compile_sm90_pair(dtype_str: str = "bf16", causal: bool = True, **overrides):
    """The paired two-warpgroup kernel (``pair_kernel``)."""
    from . import pair_kernel as P
    consts = {"CAUSAL": causal, "num_warps": P.NUM_WARPS, "WG1_REGS": P.WG1_REGS, "RQ_REG": int(P.RQ_REG),
              "RAW": int(P.RAW), "P0_FIRST": int(P.P0_FIRST),
              "HINT": int(P.HINT), "PV0_FIRST": int(P.PV0_FIRST), "LAZY": int(P.LAZY), "EARLY_P0": int(P.EARLY_P0),
              "ASM_S": int(P.ASM_S), "ASM_PV": int(P.ASM_PV), "TRACE": 0, **P.RAW_ZERO, **overrides}
    opts = {"num_warps": P.NUM_WARPS}
    if consts["RAW"]:   # two compiles, as the launcher does (pair_kernel.raw_constants)
        return _compile_twice(P.mla_decode_pair_kernel, dtype_str, consts, opts, P.V_BOX, P.raw_constants)
    return _compile(P.mla_decode_pair_kernel, dtype_str, consts, opts, v_box=P.V_BOX)


def ptxas_stats(ptx: str) -> tuple[int, int, int, list]:
    """(registers, spill-store bytes, spill-load bytes, performance notes) from ``ptxas -v`` (bundled with Triton)
    on the PTX. The notes are ptxas's C75xx codes, e.g. C7507 (setmaxnreg ignored), C7512 (wgmma serialised for
    lack of registers), C7517 (warpgroup.wait injected)."""
    import os
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        res = subprocess.run([get_ptxas(90).path, "-arch=sm_90a", "-v", src, "-o", os.path.join(d, "k.cubin")],
                             capture_output=True, text=True, check=True)
    log = res.stderr + res.stdout
    regs = int(re.search(r"Used (\d+) registers", log).group(1))
    st = int(re.search(r"(\d+) bytes spill stores", log).group(1))
    ld = int(re.search(r"(\d+) bytes spill loads", log).group(1))
    return regs, st, ld, sorted(set(re.findall(r"\((C75\d\d)\)", log)))


def stats(compiled) -> dict:
    ptx = compiled.asm["ptx"]
    md = compiled.metadata
    regs, spill_st, spill_ld, notes = ptxas_stats(ptx)
    return {
        "n_regs": regs,
        "n_spills": spill_st + spill_ld,
        "ptxas_notes": notes,
        "shared": md.shared,
        "wgmma": len(re.findall(r"wgmma\.mma_async", ptx)),
        "tma": len(re.findall(r"cp\.async\.bulk\.tensor", ptx)),
    }


# ``report`` kind suffix ("pair-<suffix>") -> pair_kernel constants it overrides (RAW = 0: the tile loads and waits
# through Gluon's TMA / mbarrier ops; the flags measured on 2026-12-07, docs/perf-notes.md "Session 16")
_PAIR_FLAGS = {"": {}, "raw0": {"RAW": 0}, "p0first-hint": {"P0_FIRST": 1, "HINT": 1},
               "flashmla-order": {"P0_FIRST": 0, "PV0_FIRST": 0}, "exact": {"LAZY": 0},
               "early": {"EARLY_P0": 1}, "asm": {"ASM_S": 1},
               "asmpv": {"ASM_S": 1, "ASM_PV": 1}}

# ``report`` kind suffix ("ws-<suffix>" / "ws2-<suffix>") -> the module constants it overrides
_VARIANT_FLAGS = {
    "": {}, "mbar": {"NAMED": 0}, "own": {"OWN": 1, "CW": 4}, "mc": {"MC": 1}, "mnamed": {"NAMED": 2},
    "mnamed-own": {"NAMED": 2, "OWN": 1, "CW": 4}, "qload": {"Q_TMA": 0}, "qload-own": {"Q_TMA": 0, "OWN": 1, "CW": 4},
    "qtma2": {"Q_TMA": 2}, "qtma2-own": {"Q_TMA": 2, "OWN": 1, "CW": 4}, "pdl": {"PDL": 1},
    "gluon-s": {"ASM_S": 0}, "gluon-s-own": {"ASM_S": 0, "OWN": 1, "CW": 4},
    "asmpv": {"ASM_S": 1, "ASM_PV": 1, "PV_REGS": 192, "SM_REGS": 64},
    "asmpv-own": {"ASM_S": 1, "ASM_PV": 1, "PV_REGS": 192, "SM_REGS": 64, "OWN": 1, "CW": 4},
    "trace": {"TRACE": 1},
}


def report(kind: str, dtype_str: str, causal: bool, config=(True, True, True)) -> dict:
    """``stats`` of one compiled variant (``kind`` ``"ws"``, ``"ws2"``, ``"ws-mbar"`` / ``"ws2-mbar"`` (NAMED = 0),
    ``"ws2-own"`` (OWN = 1, CHUNK_WAIT = 4), ``"ws2-mc"`` (MC = 1: 2-CTA cluster, multicast TMA), ``"ws2-mnamed"``
    (NAMED = 2: the running max between the softmax warpgroups on named barriers too; ``"ws2-mnamed-own"`` with OWN),
    ``"ws-qload"`` / ``"ws2-qload"`` (Q_TMA = 0: the Q tile by plain loads, the fallback for q layouts without one
    row stride; ``"ws2-qload-own"`` with OWN), ``"ws-qtma2"`` / ``"ws2-qtma2"`` (Q_TMA = 2: the next chunk's Q issued
    early), ``"ws-pdl"`` / ``"ws2-pdl"`` (PDL = 1: programmatic dependent launch), ``"ws2-gluon-s"`` /
    ``"ws2-gluon-s-own"`` (ASM_S = 0: S's wgmmas from Gluon instead of inline PTX), ``"ws2-asmpv"`` /
    ``"ws2-asmpv-own"`` (and ASM_PV = 1: P.V's, at 192 / 64 registers), ``"ws2-trace"`` (TRACE = 1: the per-page
    clock stamps of ``benchmarks/trace_ws.py``),
    ``"pair"`` (``"pair-raw0"`` ...: ``_PAIR_FLAGS``) or ``"lockstep"``) plus its warp count, whether its PTX targets
    sm_90a and uses ``setmaxnreg``, its named-barrier arrives (``bar.arrive``) and syncs (``bar.sync``, Triton's own
    included), its L2 cache hints and its ``griddepcontrol`` instructions (PDL)."""
    k = _build(kind, dtype_str, causal, config)
    ptx = k.asm["ptx"]
    return dict(stats(k), num_warps=k.metadata.num_warps, sm90a=".target sm_90a" in ptx,
                setmaxnreg="setmaxnreg.inc.sync.aligned.u32" in ptx,
                bar_arrive=len(re.findall(r"\bbar\.arrive\b", ptx)),
                bar_sync=len(re.findall(r"\bbar\.sync\b", ptx)),
                cache_hint=len(re.findall(r"\.L2::cache_hint", ptx)),
                multicast=len(re.findall(r"multicast::cluster", ptx)), mapa=len(re.findall(r"\bmapa\.", ptx)),
                cluster_barrier=len(re.findall(r"barrier\.cluster\.wait", ptx)),
                gdc_wait=len(re.findall(r"griddepcontrol\.wait", ptx)),
                gdc_launch=len(re.findall(r"griddepcontrol\.launch_dependents", ptx)))


def _build(kind: str, dtype_str: str, causal: bool, config=(True, True, True)):
    """The compiled kernel ``report`` describes (``kind`` as there)."""
    base, _, suffix = kind.partition("-")
    flags = _VARIANT_FLAGS[suffix] if base in ("ws", "ws2") else _PAIR_FLAGS[suffix] if base == "pair" else {}
    if base == "ws":
        return compile_sm90_ws(dtype_str, causal, **flags)
    if base == "ws2":
        return compile_sm90_ws2(dtype_str, causal, **flags)
    if base == "pair":
        return compile_sm90_pair(dtype_str, causal, **flags)
    return compile_sm90(dtype_str, causal, *config)


def report_subprocess(kind: str, dtype_str: str, causal: bool, config=(True, True, True)) -> dict:
    """``report`` in a fresh interpreter without ``TRITON_INTERPRET``: with it set (how CI runs the tests),
    Triton 3.6 turns jitted helpers into interpreter functions at import and cannot compile the kernel (a warm
    Triton cache hides this: nothing is compiled then)."""
    return _fresh(f"report({kind!r}, {dtype_str!r}, {bool(causal)!r}, {tuple(config)!r})")


def ptx_subprocess(kind: str, dtype_str: str, causal: bool) -> str:
    """The PTX of ``report``'s ``kind`` (``"ws2"``, ``"ws2-gluon-s"`` ...), compiled as ``report_subprocess`` does."""
    return _fresh(f"_build({kind!r}, {dtype_str!r}, {bool(causal)!r}).asm['ptx']")


def _fresh(expr: str):
    """``expr`` (over this module's names) evaluated in a fresh interpreter without ``TRITON_INTERPRET``; its value
    comes back as JSON."""
    import json
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = f"import json; from flash_mla.hopper.compile_check import _build, report; print(json.dumps({expr}))"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    import time
    for dt in ("bf16", "fp16"):
        for causal in (False, True):
            t = time.time()
            print("ws", dt, f"causal={causal}", stats(compile_sm90_ws(dt, causal)), f"{time.time() - t:.1f}s")
    for p_smem, overlap, tma3d in ((True, False, False), (True, True, False), (True, False, True),
                                   (True, True, True), (False, False, False)):
        for dt in ("bf16", "fp16"):
            for causal in (False, True):
                t = time.time()
                c = compile_sm90(dt, causal, p_smem, overlap, tma3d)
                print(f"p_smem={p_smem} overlap={overlap} tma3d={tma3d}", dt, f"causal={causal}", stats(c),
                      f"{time.time() - t:.1f}s")
