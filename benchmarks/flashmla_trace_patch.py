"""Clock-stamp patch for FlashMLA's ``splitkv_mla.cu`` (c2067be), the counterpart of ``trace_pair.py``'s stamps.

Applied to a copy of ``.flashmla_src/FlashMLA`` by ``trace_flashmla.py`` (never to the source tree): CTA (0, 0, 0)'s
thread 0 of each warpgroup writes ``clock64()`` at fixed steps of each page pair of its first sequence into a
``__device__`` buffer ``[256 pairs, 16 events]``; ``flash_mla_cuda.get_trace()`` copies it out and
``reset_trace()`` zeroes it.

Events (pair = block_idx / 2 of the first sequence). Warpgroup 0: 0 pair start, 1 sScale0 published, 2 P0 V0L done,
3 sScale1 in and tiles 0-3 of block+2 issued, 7 P0 published, 4 rO1sP0sV0RIssued in (P1 V1L next), 5 P1 V1L done and
tiles 0-3 of block+3 issued, 6 S(block+2) done. Warpgroup 1: 8 pair start, 9 sScale0 in, 10 sScale1 published and P1
stored, 11 both P V issued, 13 P1 V1R done and tiles 4-8 of block+3 issued, 12 both done and tiles 4-8 of block+2
issued, 14 S(block+3) done.
"""
from __future__ import annotations

from pathlib import Path

_HEAD = """using cutlass::arch::NamedBarrier;

__device__ long long flashmla_trace_buf[256 * 16];
#define FM_STAMP(ev) do { if (fm_first && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 && \\
    idx_in_warpgroup == 0 && block_idx / 2 < 256) flashmla_trace_buf[(block_idx / 2) * 16 + (ev)] = clock64(); } while (0)
void flashmla_trace_read(long long *host) { cudaMemcpyFromSymbol(host, flashmla_trace_buf, sizeof(flashmla_trace_buf)); }
void flashmla_trace_reset() {
    static long long zeros[256 * 16] = {0};
    cudaMemcpyToSymbol(flashmla_trace_buf, zeros, sizeof(zeros));
}
"""

# (anchor, replacement, expected count) on splitkv_mla.cu; events follow the anchors they name.
_CU = [
    ("using cutlass::arch::NamedBarrier;\n", _HEAD, 1),
    ("    int end_block_idx,\n    int idx_in_warpgroup\n) {\n    int start_token_idx = block_idx * T::PAGE_BLOCK_SIZE;\n",
     "    int end_block_idx,\n    int idx_in_warpgroup,\n    bool fm_first\n) {\n"
     "    int start_token_idx = block_idx * T::PAGE_BLOCK_SIZE;\n", 2),
    ("block_table_ptr, seqlen_k, block_idx, end_block_idx, idx_in_warpgroup \\",
     "block_table_ptr, seqlen_k, block_idx, end_block_idx, idx_in_warpgroup, batch_idx == begin_idx \\", 2),
    # warpgroup 0
    ("    Tensor rPb = make_tensor<T::InputT>(Shape<Shape<_2, _2, _2>, _1, _4>{});\n    // Calc P0 = softmax(P0)\n",
     "    FM_STAMP(0);\n    Tensor rPb = make_tensor<T::InputT>(Shape<Shape<_2, _2, _2>, _1, _4>{});\n"
     "    // Calc P0 = softmax(P0)\n", 1),
    ("    NamedBarrier::arrive(T::NUM_THREADS, NamedBarriers::sScale0Ready);\n\n    // Issue rO0 += rPb @ sV0L\n",
     "    NamedBarrier::arrive(T::NUM_THREADS, NamedBarriers::sScale0Ready);\n    FM_STAMP(1);\n\n"
     "    // Issue rO0 += rPb @ sV0L\n", 1),
    ("    // Wait for rO0, launch TMA for the next V0L\n    cute::warpgroup_wait<0>();\n",
     "    // Wait for rO0, launch TMA for the next V0L\n    cute::warpgroup_wait<0>();\n    FM_STAMP(2);\n", 1),
    ("    }\n    wg0_scale_rP0<T>(sScale1, rP0, rPb, idx_in_warpgroup);\n",
     "    }\n    FM_STAMP(3);\n    wg0_scale_rP0<T>(sScale1, rP0, rPb, idx_in_warpgroup);\n", 1),
    ("    NamedBarrier::arrive(T::NUM_THREADS, NamedBarriers::sP0Ready);\n    \n",
     "    NamedBarrier::arrive(T::NUM_THREADS, NamedBarriers::sP0Ready);\n    FM_STAMP(7);\n    \n", 1),
    ("        NamedBarrier::arrive_and_wait(T::NUM_THREADS, NamedBarriers::rO1sP0sV0RIssued);\n",
     "        NamedBarrier::arrive_and_wait(T::NUM_THREADS, NamedBarriers::rO1sP0sV0RIssued);\n        FM_STAMP(4);\n", 1),
    ("        launch_kv_tiles_copy_tma<0, 4>(tma_gK(_, _, nxt_block1_index), sK1, tma_params.tma_K, barriers_K1, "
     "idx_in_warpgroup);\n    }\n",
     "        launch_kv_tiles_copy_tma<0, 4>(tma_gK(_, _, nxt_block1_index), sK1, tma_params.tma_K, barriers_K1, "
     "idx_in_warpgroup);\n        FM_STAMP(5);\n    }\n", 1),
    ("    // Wait for P0 = Q @ K0^T\n    cute::warpgroup_wait<0>();\n",
     "    // Wait for P0 = Q @ K0^T\n    cute::warpgroup_wait<0>();\n    FM_STAMP(6);\n", 1),
    # warpgroup 1
    ("    Tensor rP1b = make_tensor<T::InputT>(Shape<Shape<_2, _2, _2>, _1, _4>{});\n",
     "    FM_STAMP(8);\n    Tensor rP1b = make_tensor<T::InputT>(Shape<Shape<_2, _2, _2>, _1, _4>{});\n", 1),
    ("    NamedBarrier::arrive_and_wait(T::NUM_THREADS, NamedBarriers::sScale0Ready);\n    wg1_bunch_0",
     "    NamedBarrier::arrive_and_wait(T::NUM_THREADS, NamedBarriers::sScale0Ready);\n    FM_STAMP(9);\n    wg1_bunch_0", 1),
    ("        save_rPb_to_sP<T>(rP1b, sP1, idx_in_warpgroup);\n    }\n",
     "        save_rPb_to_sP<T>(rP1b, sP1, idx_in_warpgroup);\n    }\n    FM_STAMP(10);\n", 1),
    ("        NamedBarrier::arrive(T::NUM_THREADS, NamedBarriers::rO1sP0sV0RIssued);\n    }\n",
     "        NamedBarrier::arrive(T::NUM_THREADS, NamedBarriers::rO1sP0sV0RIssued);\n    }\n    FM_STAMP(11);\n", 1),
    ("        launch_kv_tiles_copy_tma<4, 9>(tma_gK(_, _, nxt_block1_index), sK1, tma_params.tma_K, barriers_K1, "
     "idx_in_warpgroup);\n    }\n",
     "        launch_kv_tiles_copy_tma<4, 9>(tma_gK(_, _, nxt_block1_index), sK1, tma_params.tma_K, barriers_K1, "
     "idx_in_warpgroup);\n        FM_STAMP(13);\n    }\n", 1),
    ("        launch_kv_tiles_copy_tma<4, 9>(tma_gK(_, _, nxt_block0_index), sK0, tma_params.tma_K, barriers_K0, "
     "idx_in_warpgroup);\n    }\n",
     "        launch_kv_tiles_copy_tma<4, 9>(tma_gK(_, _, nxt_block0_index), sK0, tma_params.tma_K, barriers_K0, "
     "idx_in_warpgroup);\n        FM_STAMP(12);\n    }\n", 1),
    ("    // This is also the reason why we put QK^T here, instead of the first operation in the loop\n"
     "    cute::warpgroup_wait<0>();\n",
     "    // This is also the reason why we put QK^T here, instead of the first operation in the loop\n"
     "    cute::warpgroup_wait<0>();\n    FM_STAMP(14);\n", 1),
]

_API = [
    ("PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {",
     "void flashmla_trace_read(long long *host);\nvoid flashmla_trace_reset();\n"
     "at::Tensor get_trace() {\n    auto t = torch::zeros({256 * 16}, torch::kInt64);\n"
     "    flashmla_trace_read(reinterpret_cast<long long *>(t.data_ptr<int64_t>()));\n    return t;\n}\n\n"
     "PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {\n    m.def(\"get_trace\", &get_trace);\n"
     "    m.def(\"reset_trace\", &flashmla_trace_reset);", 1),
]


def _apply(path: Path, edits) -> None:
    text = path.read_text()
    for old, new, count in edits:
        found = text.count(old)
        if found != count:
            raise SystemExit(f"{path.name}: anchor found {found} times, expected {count}: {old[:70]!r}")
        text = text.replace(old, new)
    path.write_text(text)


def patch(root: Path) -> None:
    """Patches the FlashMLA copy at ``root`` in place."""
    _apply(root / "csrc" / "kernels" / "splitkv_mla.cu", _CU)
    _apply(root / "csrc" / "flash_api.cpp", _API)


if __name__ == "__main__":
    import sys
    patch(Path(sys.argv[1]))
