"""Load-only ceiling of the decode kernels: TMA-stream the cache pages the way the Hopper kernel does, no compute.

    python3 benchmarks/load_ceiling.py

Each CTA walks the pages of its sequences (protocol inputs: b = 128, s_k = 8192, shuffled page table) through an
NSTAGE-deep ring of whole 64 x 576 pages, re-issuing a stage as soon as its page has landed. ``readers`` CTAs read
every sequence (the 64-row query blocks of one sequence: 1 for s_q * h_q <= 64, 4 for h_q = 128, s_q = 2), so with
readers > 1 most pages come from L2. Prints GB/s into the SMs and cycles per page per CTA at the SM clock read
during the run. This is the floor the attention kernel's page loads cannot beat (docs/perf-notes.md).
"""
import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier

from flash_mla.hopper import kernel as K
from flash_mla.hopper.launcher import make_descriptors


@gluon.jit
def _clock64():
    """The SM clock, as a one-element tensor replicated over the warpgroup."""
    z = gl.full([1], 0, gl.int32, layout=gl.BlockedLayout([1], [32], [4], [0]))
    return gl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l,r", [z], dtype=gl.int64, is_pure=False, pack=1)


@gluon.jit
def _stream_kernel(k_desc, v_desc, bt_ptr, stride_bt, n_pages, seqs_per_cta, clk_ptr,
                   NSTAGE: gl.constexpr, PAGE: gl.constexpr, DV: gl.constexpr, D: gl.constexpr,
                   CHUNK: gl.constexpr):
    dtype: gl.constexpr = k_desc.dtype
    NCHUNK: gl.constexpr = D // CHUNK
    kv_smem = gl.allocate_shared_memory(dtype, [NSTAGE, PAGE, DV], k_desc.layout)
    kr_smem = gl.allocate_shared_memory(dtype, [NSTAGE, PAGE, D - DV], k_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [NSTAGE, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NSTAGE):
        mbarrier.init(bars.index(i), count=1)
    seq0 = gl.program_id(2) * seqs_per_cta
    total = seqs_per_cta * n_pages
    for i in gl.static_range(NSTAGE):
        page = gl.load(bt_ptr + (seq0 + i // n_pages).to(gl.int64) * stride_bt + i % n_pages)
        K._issue_page_at(k_desc, v_desc, kv_smem, kr_smem, bars, page, i < total, i, NCHUNK, PAGE, CHUNK)
    t0 = _clock64()
    for i in range(total):
        st = i % NSTAGE
        mbarrier.wait(bars.index(st), (i // NSTAGE) & 1)
        gl.thread_barrier()
        nxt = i + NSTAGE
        ok = nxt < total
        page = gl.load(bt_ptr + (seq0 + nxt // n_pages).to(gl.int64) * stride_bt + nxt % n_pages, mask=ok,
                       other=0)
        K._issue_page_at(k_desc, v_desc, kv_smem, kr_smem, bars, page, ok, st, NCHUNK, PAGE, CHUNK)
    t1 = _clock64()
    cta = (gl.program_id(2) * gl.num_programs(0) + gl.program_id(0))
    gl.store(clk_ptr + cta + gl.arange(0, 1, layout=gl.BlockedLayout([1], [32], [4], [0])), t1 - t0)


def main():
    b, s_k, page = 128, 8192, 64
    n_pages = s_k // page
    nblk = b * n_pages
    kc = torch.randn(nblk, page, 1, 576, dtype=torch.bfloat16, device="cuda")
    bt = torch.randperm(nblk, generator=torch.Generator().manual_seed(0)).int().reshape(b, n_pages).cuda()
    k_desc, v_desc = make_descriptors(kc)
    print(f"{torch.cuda.get_device_name()}; b={b} s_k={s_k}; one CTA per (query block, group of sequences)")
    print("readers nstage seqs/CTA CTAs |    ms   GB/s into SMs  | cycles/page/CTA (median CTA)")
    for readers, seqs in ((1, 1), (2, 2), (4, 4)):
        for nstage in (1, 2, 3):
            grid = (readers, 1, b // seqs)
            clk = torch.zeros(readers * (b // seqs), dtype=torch.int64, device="cuda")

            def fn():
                _stream_kernel[grid](k_desc, v_desc, bt, bt.stride(0), n_pages, seqs, clk,
                                     NSTAGE=nstage, PAGE=page, DV=512, D=576, CHUNK=64, num_warps=4)

            ms = triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
            pages = readers * b * n_pages
            gbs = pages * page * 576 * 2 / ms / 1e6
            cyc = clk.float().median().item() / (seqs * n_pages)
            print(f"{readers:7d} {nstage:6d} {seqs:8d} {readers * (b // seqs):4d} | {ms:7.4f} {gbs:8.0f}       | "
                  f"{cyc:8.0f}")


if __name__ == "__main__":
    main()
