"""Tile scheduler: splits the KV work of a decode step evenly across the GPU's SMs (FlashMLA's scheme).

``get_mla_metadata(cache_seqlens, num_heads_per_head_k, num_heads_k)`` runs once per decode step and
returns ``(tile_scheduler_metadata, num_splits)``, shared by every layer of the step.

Work is counted in KV blocks of ``BLOCK_N = 64`` keys. Sequence ``i`` costs ``ceil(L_i / 64) + F`` block units
(the fixed part ``F`` stands for the per-split cost: loading Q, writing the output, the combine). With ``P`` SM
parts each part gets a payload of ``ceil(total / P) + F`` units and the sequences are laid out greedily in order:
a part takes whole sequences while they fit, then (if more than ``F`` is left) the first blocks of the next
sequence, whose remainder starts the next part. A sequence cut this way is *split*; its pieces are merged by the
combine kernel using their log-sum-exp.

``F`` (``fixed_overhead``): ``FIXED_OVERHEAD_SMALL`` (2) for at most 32 query rows per KV head, ``FIXED_OVERHEAD``
(FlashMLA's 5) up to one 64-row tile and ``FIXED_OVERHEAD_TILES`` (5) for more. What a split costs grows with the
rows: its partial results (rows x 512 fp32, written, then read by the combine) and its Q tile. With 16-32 rows that is
about one page of traffic, and F = 2 was 0.7-1.9 % faster than 5 on the six varlen 16- and 32-row shapes of FlashMLA's
matrix (H100, memory-bound; with 64 rows F = 2-3 was up to 0.5 % slower, 4 up to 0.3 % faster; docs/perf-notes.md
"Session 18"). With more than one tile each CTA runs at its own SM's rate and the busiest part sets the call's time,
and with 5 it can be 1-4 % above the mean (e.g. s_k = 4096, two tiles: 64 parts of two whole sequences, 2 empty).
F = 2 there shortens the busiest part in a pages-only cost model, but measured on H100 it was 1.5 % slower (geo-mean
over the 12 compute-bound configs; up to 6 % where it split every sequence), because a split costs more than the
model's pages: the partial results and the combine (docs/perf-notes.md "Session 15"). The three constants are kept
apart so that each choice can be measured again (``benchmarks/sched_ab.py``).

Whole sequences (``WHOLE_SEQUENCES``, not in FlashMLA): when the greedy above splits at least one sequence, a second
layout is tried: whole sequences in order, a new part whenever the next one would take the current part past
``W = B + F`` blocks, where ``B`` is the greedy's busiest part (blocks of keys, without the F terms). If that needs
no more than the available parts, it is used: no sequence is split, so there are no partial results and nothing for
the combine, at the price of a busiest part up to F blocks longer. On FlashMLA's matrix this applies to three
equal-length shapes (s_k = 8192 with two row tiles, s_k = 4096 with four), where the greedy split 29-62 sequences
for a busiest part 3 blocks shorter; measured 2-3 % faster there on H100 (docs/perf-notes.md "Session 18").

Layout (int32, on the device of ``cache_seqlens``):

``tile_scheduler_metadata`` ``[num_sm_parts, 8]``, row ``p``::

    [begin_idx, begin_seqlen, end_idx, end_seqlen, begin_n_split_idx, 0, 0, 0]

part ``p`` processes sequence ``begin_idx`` from key ``begin_seqlen``, every sequence strictly between, and
sequence ``end_idx`` up to key ``end_seqlen`` (exclusive). ``begin_seqlen`` is a multiple of 64;
``end_seqlen`` is a multiple of 64 or the sequence's length. A part with ``begin_idx > end_idx`` is empty.
``begin_n_split_idx`` is the split index of the first piece (later pieces of a part start at split 0).

``num_splits`` ``[b + 1]``: cumulative split counts; sequence ``i`` has splits
``num_splits[i] .. num_splits[i + 1] - 1``, which index the float32 partial-result workspace
(``[b + num_sm_parts, ...]`` rows always suffice). A sequence with exactly one split is written straight to
the output by the attention kernel and skipped by the combine.

``num_sm_parts = max(1, sm_count // num_heads_k // ceil(num_heads_per_head_k / 64))``: one CTA per
(part, KV head, 64-row block of query rows) fills the GPU once.

The GPU computation is a single-program Triton kernel, so it never synchronises with the host and can be
captured in a CUDA graph. On CPU tensors the same greedy runs in Python (or in Triton's interpreter with
``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch
import triton
import triton.language as tl

MAX_GRID_YZ = 65535    # CUDA's limit on a grid's y and z dimensions (the kernels' grid z: the scheduler's parts)

BLOCK_N = 64          # keys per scheduling block
FIXED_OVERHEAD = 5    # per-split overhead, in blocks (FlashMLA's kFixedOverheadNumBlocks): one 64-row tile
FIXED_OVERHEAD_SMALL = 2   # the same with at most SMALL_ROWS query rows per KV head (a split's partial results are
SMALL_ROWS = 32            # rows x 512 fp32: with 16-32 rows ~1 page of traffic, not 5; measured, docs/perf-notes.md)
FIXED_OVERHEAD_TILES = 5   # the same with more than one 64-row tile of query rows per KV head (2: measured slower)
WHOLE_SEQUENCES = True   # when the greedy splits a sequence but whole sequences alone fit the parts with the busiest
                         # part at most F blocks above the greedy's, lay out whole sequences (no split, no combine)
BLOCK_M = 64          # query rows per CTA assumed when sizing the number of parts
CPU_SM_COUNT = 8      # parts used on CPU tensors (no SMs to fill; small keeps the interpreter fast)


def fixed_overhead(num_heads_per_head_k: int) -> int:
    """The per-split overhead ``F`` (in blocks) for ``num_heads_per_head_k`` query rows per KV head."""
    if num_heads_per_head_k <= SMALL_ROWS:
        return FIXED_OVERHEAD_SMALL
    return FIXED_OVERHEAD if num_heads_per_head_k <= BLOCK_M else FIXED_OVERHEAD_TILES


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def device_guard(device: torch.device):
    """Make ``device`` current for a kernel launch (Triton launches on the current device's stream). A no-op when
    it already is (entering ``torch.cuda.device`` costs ~10 us of host time per call)."""
    if device.type != "cuda" or device.index is None or device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(device)


def sm_count(device: torch.device) -> int:
    """Number of SMs of ``device`` (cached; no synchronisation). CPU: ``CPU_SM_COUNT``."""
    if device.type == "cuda":
        return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return CPU_SM_COUNT


def num_sm_parts_for(device: torch.device, num_heads_per_head_k: int, num_heads_k: int) -> int:
    return max(1, sm_count(device) // num_heads_k // triton.cdiv(num_heads_per_head_k, BLOCK_M))


@triton.jit
def _mla_metadata_kernel(
    SEQLENS, META, NSPLITS, batch, num_parts,
    BLOCK_N: tl.constexpr, FIXED: tl.constexpr, BLOCK_B: tl.constexpr, WHOLE: tl.constexpr,
):
    # Total cost of the step, in blocks (and the longest sequence's blocks).
    total = 0
    longest = 0
    for start in range(0, batch, BLOCK_B):
        offs = start + tl.arange(0, BLOCK_B)
        ok = offs < batch
        seqlen = tl.load(SEQLENS + offs, mask=ok, other=0)
        total += tl.sum(tl.where(ok, (seqlen + BLOCK_N - 1) // BLOCK_N + FIXED, 0))
        longest = tl.maximum(longest, tl.max((seqlen + BLOCK_N - 1) // BLOCK_N))
    payload = (total + num_parts - 1) // num_parts + FIXED

    tl.store(NSPLITS, 0)
    now_idx = 0       # sequence being laid out
    now_block = 0     # its first block not yet given to a part
    now_split = 0     # split index of its next piece
    cum_splits = 0
    busiest = 0       # blocks of the busiest part
    for part in range(num_parts):
        row = META + part * 8
        blocks = 0
        tl.store(row + 0, now_idx)
        tl.store(row + 1, now_block * BLOCK_N)
        tl.store(row + 4, now_split)
        tl.store(row + 5, 0)
        tl.store(row + 6, 0)
        tl.store(row + 7, 0)
        remain = payload
        go = now_idx < batch
        while go:
            num_blocks = (tl.load(SEQLENS + now_idx) + BLOCK_N - 1) // BLOCK_N
            left = num_blocks - now_block
            if remain >= left + FIXED:
                # The rest of this sequence fits: it ends in this part.
                cum_splits += now_split + 1
                tl.store(NSPLITS + now_idx + 1, cum_splits)
                remain -= left + FIXED
                blocks += left
                now_idx += 1
                now_block = 0
                now_split = 0
                go = now_idx < batch
            else:
                # Take what fits (beyond the fixed overhead) and cut the sequence there.
                if remain - FIXED > 0:
                    now_block += remain - FIXED
                    blocks += remain - FIXED
                    now_split += 1
                    remain = 0
                go = now_idx < 0
        busiest = tl.maximum(busiest, blocks)
        if now_block > 0:
            tl.store(row + 2, now_idx)
            tl.store(row + 3, now_block * BLOCK_N)
        else:
            tl.store(row + 2, now_idx - 1)
            tl.store(row + 3, tl.load(SEQLENS + tl.maximum(now_idx - 1, 0), mask=now_idx > 0, other=0))

    if WHOLE:
        # some sequence was split: do whole sequences fit within F more blocks? (A sequence longer than that never
        # does: no scan then, the usual case with varied lengths.)
        limit = busiest + FIXED
        if (cum_splits > batch) & (longest <= limit):
            used = 1
            cur = 0
            for i in range(batch):
                n = (tl.load(SEQLENS + i) + BLOCK_N - 1) // BLOCK_N
                if cur + n > limit:
                    used += 1
                    cur = 0
                cur += n
            if used <= num_parts:
                # rewrite: parts of whole sequences [first, i - 1], then empty parts
                part = 0
                cur = 0
                first = 0
                prev_len = 0
                for i in range(batch):
                    seqlen = tl.load(SEQLENS + i)
                    n = (seqlen + BLOCK_N - 1) // BLOCK_N
                    if cur + n > limit:
                        _whole_row(META + part * 8, first, i - 1, prev_len)
                        part += 1
                        first = i
                        cur = 0
                    cur += n
                    prev_len = seqlen
                    tl.store(NSPLITS + i + 1, i + 1)
                _whole_row(META + part * 8, first, batch - 1, prev_len)
                for p in range(part + 1, num_parts):
                    _whole_row(META + p * 8, batch, batch - 1, prev_len)


@triton.jit
def _whole_row(row, first, last, last_len):
    """A metadata row of whole sequences ``first`` .. ``last`` (empty when first > last); columns 5-7 keep the zeros
    the greedy pass wrote."""
    tl.store(row + 0, first)
    tl.store(row + 1, 0)
    tl.store(row + 2, last)
    tl.store(row + 3, last_len)
    tl.store(row + 4, 0)


def schedule_host(seqlens: list[int], num_sm_parts: int, fixed: int = FIXED_OVERHEAD,
                  whole: bool | None = None) -> tuple[list[list[int]], list[int]]:
    """The same schedule in plain Python, with per-split overhead ``fixed`` (``whole``: the whole-sequence layout
    where it applies, default ``WHOLE_SEQUENCES``): ``(metadata rows, num_splits)``. Used on CPU and as a test
    oracle."""
    batch = len(seqlens)
    num_blocks = [-(-s // BLOCK_N) for s in seqlens]
    total = sum(n + fixed for n in num_blocks)
    payload = -(-total // num_sm_parts) + fixed
    meta, num_splits = [], [0] * (batch + 1)
    now_idx = now_block = now_split = cum = 0
    busiest = 0
    for _ in range(num_sm_parts):
        row = [now_idx, now_block * BLOCK_N, 0, 0, now_split, 0, 0, 0]
        remain = payload
        blocks = 0
        while now_idx < batch:
            left = num_blocks[now_idx] - now_block
            if remain >= left + fixed:
                cum += now_split + 1
                num_splits[now_idx + 1] = cum
                remain -= left + fixed
                blocks += left
                now_idx, now_block, now_split = now_idx + 1, 0, 0
            else:
                if remain - fixed > 0:
                    now_block += remain - fixed
                    blocks += remain - fixed
                    now_split += 1
                break
        busiest = max(busiest, blocks)
        if now_block > 0:
            row[2], row[3] = now_idx, now_block * BLOCK_N
        else:
            row[2], row[3] = now_idx - 1, (seqlens[now_idx - 1] if now_idx > 0 else 0)
        meta.append(row)
    if (WHOLE_SEQUENCES if whole is None else whole) and cum > batch:
        layout = _whole_layout(num_blocks, num_sm_parts, busiest + fixed)
        if layout is not None:
            meta = [[first, 0, last, seqlens[last], 0, 0, 0, 0] for first, last in layout]
            meta += [[batch, 0, batch - 1, seqlens[-1], 0, 0, 0, 0]] * (num_sm_parts - len(layout))
            num_splits = list(range(batch + 1))
    return meta, num_splits


def _whole_layout(num_blocks: list[int], num_sm_parts: int, limit: int) -> list[tuple[int, int]] | None:
    """Whole sequences in order, a new part whenever the next would take the current one past ``limit`` blocks:
    ``[(first, last)]`` per part, or None if that needs more than ``num_sm_parts`` parts (or a sequence alone
    exceeds ``limit``)."""
    parts, first, cur = [], 0, 0
    for i, n in enumerate(num_blocks):
        if n > limit:
            return None
        if cur + n > limit:
            parts.append((first, i - 1))
            first, cur = i, 0
        cur += n
    parts.append((first, len(num_blocks) - 1))
    return parts if len(parts) <= num_sm_parts else None


def get_mla_metadata(
    cache_seqlens: torch.Tensor,
    num_heads_per_head_k: int,
    num_heads_k: int,
    num_sm_parts: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plan the split-KV work of one decode step.

    Arguments:
        cache_seqlens: ``[b]`` int32, the KV length of each sequence.
        num_heads_per_head_k: ``s_q * h_q // h_kv``, query rows that share one KV head.
        num_heads_k: ``h_kv``.
        num_sm_parts: override the number of parts (default: fill the device's SMs, as FlashMLA).

    Returns:
        tile_scheduler_metadata: ``[num_sm_parts, 8]`` int32; num_splits: ``[b + 1]`` int32 (module docstring).
    """
    if not isinstance(cache_seqlens, torch.Tensor):
        raise TypeError(f"cache_seqlens must be a torch.Tensor, got {type(cache_seqlens).__name__}")
    if cache_seqlens.dim() != 1:
        raise ValueError(f"cache_seqlens must be 1-D [batch], got shape {tuple(cache_seqlens.shape)}")
    if cache_seqlens.dtype != torch.int32:
        raise TypeError(f"cache_seqlens must be int32, got {cache_seqlens.dtype}")
    for name, value in (("num_heads_per_head_k", num_heads_per_head_k), ("num_heads_k", num_heads_k)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    device = cache_seqlens.device
    if num_sm_parts is None:
        num_sm_parts = num_sm_parts_for(device, num_heads_per_head_k, num_heads_k)
    if not isinstance(num_sm_parts, int) or num_sm_parts < 1:
        raise ValueError(f"num_sm_parts must be a positive int, got {num_sm_parts!r}")
    if num_sm_parts > MAX_GRID_YZ:   # the kernels' grid z
        raise ValueError(f"num_sm_parts must be at most {MAX_GRID_YZ}, got {num_sm_parts}")
    op = _mla_metadata_op if torch.compiler.is_compiling() else _mla_metadata_impl
    return op(cache_seqlens, num_sm_parts, fixed_overhead(num_heads_per_head_k))


def _mla_metadata_impl(cache_seqlens: torch.Tensor, num_sm_parts: int,
                       fixed: int = FIXED_OVERHEAD) -> tuple[torch.Tensor, torch.Tensor]:
    device = cache_seqlens.device
    batch = cache_seqlens.shape[0]
    if batch == 0 or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") != "1"):
        # Host path: CPU tensors, or an empty batch (no seqlens to read, nothing to synchronise on).
        meta, splits = schedule_host(cache_seqlens.tolist(), num_sm_parts, fixed)
        return (torch.tensor(meta, dtype=torch.int32, device=device).reshape(num_sm_parts, 8),
                torch.tensor(splits, dtype=torch.int32, device=device))
    meta = torch.empty(num_sm_parts, 8, dtype=torch.int32, device=device)
    num_splits = torch.empty(batch + 1, dtype=torch.int32, device=device)
    with device_guard(device):
        _mla_metadata_kernel[(1,)](cache_seqlens.contiguous(), meta, num_splits, batch, num_sm_parts,
                                   BLOCK_N=BLOCK_N, FIXED=fixed, BLOCK_B=256, WHOLE=bool(WHOLE_SEQUENCES),
                                   num_warps=1)
    return meta, num_splits


# Registered as a custom op for torch.compile; eager calls skip its dispatcher.
_mla_metadata_op = torch.library.custom_op("flash_mla::get_mla_metadata", mutates_args=())(_mla_metadata_impl)


@_mla_metadata_op.register_fake
def _mla_metadata_fake(cache_seqlens, num_sm_parts, fixed=FIXED_OVERHEAD):
    return (cache_seqlens.new_empty(num_sm_parts, 8, dtype=torch.int32),
            cache_seqlens.new_empty(cache_seqlens.shape[0] + 1, dtype=torch.int32))
