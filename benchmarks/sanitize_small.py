"""A small decode problem on every GPU backend, for compute-sanitizer (memcheck, racecheck).

    compute-sanitizer --tool memcheck python3 benchmarks/sanitize_small.py
    SANITIZE_HOPPER_CFG=pair compute-sanitizer --tool racecheck python3 benchmarks/sanitize_small.py
Lengths cross page boundaries and force splits (so the combine runs); block-table entries past each
sequence's pages hold 2147480000 and cache rows past each end hold NaN, so any stray read shows. 8 scheduler parts
for this little work leave 2 parts empty (begin_idx = batch): a kernel that reads cache_seqlens[begin_idx] there
reads past the tensor, which memcheck sees only without PyTorch's caching allocator (device_run.sh sets
PYTORCH_NO_CUDA_MEMORY_CACHING=1; the ws kernels did that until 2026-12-06).
"""
import os

import torch
import triton

from flash_mla import flash_mla_with_kvcache, get_mla_metadata, resolve_backend
from flash_mla.reference import mla_decode_reference


def main():
    if os.environ.get("SANITIZE_HOPPER_CFG") == "pair":   # the opt-in paired kernel instead of the default
        import flash_mla.hopper.launcher as hl
        hl.CONFIG_OVERRIDE = hl.PAIR
    if os.environ.get("TRITON_INSTRUMENTATION_MODE") == "consan":
        # Triton's concurrency sanitizer (mbarrier/TMA/wgmma-aware) keeps its state in global scratch memory
        triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    torch.manual_seed(0)
    lens = [1, 65, 300, 1000]
    b, page = len(lens), 64
    width = -(-max(lens) // page) + 1
    kc = torch.randn(b * width, page, 1, 576, dtype=torch.bfloat16, device="cuda")
    bt = torch.randperm(b * width, device="cuda").int().reshape(b, width)
    seqlens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    for i, L in enumerate(lens):
        used = -(-L // page)
        kc[bt[i, used - 1].long(), L % page or page:] = float("nan")
        bt[i, used:] = 2147480000
    for h_q, s_q in ((16, 1), (128, 2)):
        q = torch.randn(b, s_q, h_q, 576, dtype=torch.bfloat16, device="cuda")
        meta, splits = get_mla_metadata(seqlens, s_q * h_q, 1, num_sm_parts=8)
        ref_out, ref_lse = mla_decode_reference(q, kc, bt, seqlens, 512, None, True)
        backends = ["triton"] + (["hopper"] if resolve_backend(q, kc, 512) == "hopper" else [])
        for backend in backends:
            out, lse = flash_mla_with_kvcache(q, kc, bt, seqlens, 512, meta, splits, causal=True, backend=backend)
            torch.cuda.synchronize()
            err = ((out.float() - ref_out.float()).norm() / ref_out.float().norm()).item()
            no_key = torch.isinf(ref_lse)          # rows that see no key: lse = +inf on both sides
            lse_err = (lse - ref_lse).masked_fill(no_key, 0).abs().max().item()
            print(f"h_q={h_q} s_q={s_q} {backend}: rel L2 {err:.2e}, lse max err {lse_err:.2e}")
            assert err < 1e-2 and lse_err < 1e-3 and torch.equal(torch.isinf(lse), no_key)


if __name__ == "__main__":
    main()
