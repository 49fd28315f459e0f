"""Properties of the tile scheduler (get_mla_metadata / schedule_host) on many random batches."""
import math
import os
import random
import subprocess
import sys

import pytest
import torch

import flash_mla.scheduler as sched
from conftest import needs_interpreter
from flash_mla import get_mla_metadata
from flash_mla.scheduler import BLOCK_N, FIXED_OVERHEAD, FIXED_OVERHEAD_TILES, fixed_overhead, schedule_host

SPECIAL = [0, 1, 63, 64, 65, 127, 128, 129]


def random_seqlens(rng, batch):
    kind = rng.random()
    out = []
    for _ in range(batch):
        r = rng.random()
        if r < 0.3:
            out.append(rng.choice(SPECIAL))
        elif r < 0.5:
            out.append(rng.randint(4000, 70000))           # long ones
        else:
            out.append(rng.randint(0, 2000) if kind < 0.5 else rng.randint(0, 300))
    return out


def cases(n=60, seed=1234):
    rng = random.Random(seed)
    res = [([0], 1), ([1], 1), ([65], 8), ([0, 0, 0], 4), ([64] * 5, 3), ([100000], 132), ([1] * 200, 132),
           ([0, 1, 63, 64, 65], 2), ([70000, 1, 1, 1], 7)]
    for _ in range(n):
        batch = rng.choice([1, 2, 3, 5, 17, 64, 128, 200, rng.randint(1, 200)])
        parts = rng.choice([1, 2, 3, 7, 8, 32, 78, 132])
        res.append((random_seqlens(rng, batch), parts))
    return res


CASES = cases()


def pieces_of(meta, seqlens):
    """[(part, seq, start_key, end_key, split_idx)] in part order, decoded as the attention kernel does."""
    res = []
    for p, row in enumerate(meta):
        begin_idx, begin_seq, end_idx, end_seq, begin_split = row[:5]
        for bi in range(begin_idx, end_idx + 1):
            start = begin_seq if bi == begin_idx else 0
            end = end_seq if bi == end_idx else seqlens[bi]
            split = begin_split if bi == begin_idx else 0
            res.append((p, bi, start, end, split))
    return res


def check_schedule(meta, num_splits, seqlens, parts, fixed=FIXED_OVERHEAD):
    b = len(seqlens)
    assert len(meta) == parts and all(len(r) == 8 for r in meta)
    assert len(num_splits) == b + 1
    nblocks = [-(-L // BLOCK_N) for L in seqlens]
    total = sum(n + fixed for n in nblocks)
    payload = -(-total // parts) + fixed

    # Row format.
    seen_empty = False
    for row in meta:
        begin_idx, begin_seq, end_idx, end_seq, _, z5, z6, z7 = row
        assert (z5, z6, z7) == (0, 0, 0)
        if begin_idx > end_idx:          # empty part: only after all the work is laid out
            assert begin_idx == b, row
            seen_empty = True
            continue
        assert not seen_empty, "a non-empty part after an empty one"
        assert 0 <= begin_idx <= end_idx < b, row
        assert begin_seq % BLOCK_N == 0 and 0 <= begin_seq <= seqlens[begin_idx], row
        assert end_seq == seqlens[end_idx] or (end_seq % BLOCK_N == 0 and 0 < end_seq < seqlens[end_idx]), row

    pieces = pieces_of(meta, seqlens)
    # Every (sequence, 64-key block) is covered exactly once; every sequence (even empty) is in some piece.
    cover = [[0] * n for n in nblocks]
    by_seq = [[] for _ in range(b)]
    for p, bi, start, end, split in pieces:
        assert start < end or seqlens[bi] == 0, f"empty piece {(p, bi, start, end)} of a non-empty sequence"
        for blk in range(start // BLOCK_N, -(-end // BLOCK_N)):
            cover[bi][blk] += 1
        by_seq[bi].append((p, start, end, split))
    for i in range(b):
        assert cover[i] == [1] * nblocks[i], f"sequence {i}: block coverage {cover[i]}"
        assert by_seq[i], f"sequence {i} is in no piece"
        # pieces in part order are consecutive key ranges with split indices 0 .. n-1
        starts = [s for _, s, _, _ in by_seq[i]]
        ends = [e for _, _, e, _ in by_seq[i]]
        assert starts[0] == 0 and ends[-1] == seqlens[i] and starts[1:] == ends[:-1]
        assert [sp for *_, sp in by_seq[i]] == list(range(len(by_seq[i])))

    # num_splits: cumulative piece counts.
    assert num_splits[0] == 0
    for i in range(b):
        assert num_splits[i + 1] - num_splits[i] == len(by_seq[i]) >= 1
    # Workspace: split slots fit in the [b + num_sm_parts] rows the interface allocates.
    assert num_splits[b] <= b + parts - 1

    greedy = schedule_host(seqlens, parts, fixed, whole=False)
    if (meta, num_splits) != greedy:
        # the whole-sequence layout (WHOLE_SEQUENCES): only where the greedy split a sequence; then nothing is split
        # and the busiest part has at most F blocks more than the greedy's
        assert sched.WHOLE_SEQUENCES and greedy[1][b] > b, "whole-sequence layout where the greedy split nothing"
        assert num_splits == list(range(b + 1)) and all(row[1] == 0 and row[4] == 0 for row in meta)
        assert _busiest(meta, seqlens)[0] <= _busiest(greedy[0], seqlens)[0] + fixed
        return
    # Load balance: the greedy never lets a part's cost exceed the payload (a cut piece takes exactly what is
    # left of the payload, a whole sequence is taken only if it fits).
    cost = [0] * parts
    for p, bi, start, end, _ in pieces:
        cost[p] += -(-end // BLOCK_N) - start // BLOCK_N + fixed
    assert max(cost) <= payload, (cost, payload)
    assert sum(cost) == total + fixed * (num_splits[b] - b)


@pytest.mark.parametrize("fixed", [FIXED_OVERHEAD, 2])
@pytest.mark.parametrize("seqlens,parts", CASES, ids=[f"b{len(s)}-P{p}-{k}" for k, (s, p) in enumerate(CASES)])
def test_schedule_host_properties(seqlens, parts, fixed):
    meta, num_splits = schedule_host(seqlens, parts, fixed)
    check_schedule(meta, num_splits, seqlens, parts, fixed)


@pytest.mark.parametrize("seqlens,parts,whole", [
    ([8192] * 128, 66, True),     # FlashMLA's s_k = 8192 two-tile shapes: the greedy splits 62 sequences
    ([4096] * 128, 33, True),     # s_k = 4096, four tiles: 29
    ([8192] * 128, 33, False),    # four tiles at s_k = 8192: 4 whole sequences (512 blocks) > 501 + 5
    ([4096] * 128, 66, False),    # the greedy already splits nothing
    ([8192] * 100 + [9000], 66, False),   # one longer sequence: whole sequences need 67 parts
    ([300] * 3, 8, True),         # small: 5 blocks each on 8 parts; the greedy cuts each in two
])
def test_whole_sequences(seqlens, parts, whole):
    """WHOLE_SEQUENCES: where the greedy splits a sequence but whole sequences fit the parts within F more blocks on
    the busiest part, no sequence is split (measured 2-3 % faster on the two s_k = 8192 two-tile shapes and the s_k =
    4096 four-tile shape, docs/perf-notes.md "Session 18"); elsewhere the layout is the greedy's."""
    meta, ns = schedule_host(seqlens, parts, 5)
    greedy = schedule_host(seqlens, parts, 5, whole=False)
    check_schedule(meta, ns, seqlens, parts, 5)
    if whole:
        assert greedy[1][-1] > len(seqlens) and ns == list(range(len(seqlens) + 1))
        assert _busiest(meta, seqlens)[0] <= _busiest(greedy[0], seqlens)[0] + 5
    else:
        assert (meta, ns) == greedy


def test_whole_sequences_off(monkeypatch):
    """WHOLE_SEQUENCES = False: FlashMLA's greedy alone (its split of the equal-length two-tile shape)."""
    monkeypatch.setattr(sched, "WHOLE_SEQUENCES", False)
    meta, ns = schedule_host([8192] * 128, 66, 5)
    assert ns[-1] == 190 and (meta, ns) == schedule_host([8192] * 128, 66, 5, whole=False)


def test_splits_do_happen():
    """The property test is not vacuous: with few parts and long sequences, sequences get split (the whole-sequence
    layout does not apply: a 79-block sequence is far past the greedy's busiest part)."""
    meta, ns = schedule_host([5000, 3000, 10], 4)
    assert ns[-1] > 3
    meta, ns = schedule_host([65] * 10, 1)
    assert ns == list(range(11))


def _busiest(meta, seqlens):
    """Pages of the busiest part and the number of empty parts."""
    pages = [0] * len(meta)
    for p, bi, start, end, _ in pieces_of(meta, seqlens):
        pages[p] += -(-end // BLOCK_N) - start // BLOCK_N
    return max(pages), sum(1 for row in meta if row[0] > row[2])


def test_fixed_overhead_by_row_tiles(monkeypatch):
    """get_mla_metadata uses FIXED_OVERHEAD_SMALL (2) for at most 32 query rows per KV head, FIXED_OVERHEAD up to one
    64-row tile and FIXED_OVERHEAD_TILES for more (both FlashMLA's 5 by default). The greedy's F matters: on
    FlashMLA's s_k = 4096 two-tile shape (128 sequences of 64 pages, 66 parts) F = 5 gives 64 parts of two whole
    sequences (128 pages) and 2 empty ones; F = 2 spreads the pages (busiest part < 128) but splits every sequence
    (measured slower, docs/perf-notes.md "Session 15"); with WHOLE_SEQUENCES the whole-sequence layout then wins
    again (128 <= busiest + 2)."""
    assert FIXED_OVERHEAD == FIXED_OVERHEAD_TILES == 5 and sched.FIXED_OVERHEAD_SMALL == 2
    seqlens = [4096] * 128
    assert _busiest(schedule_host(seqlens, 66, 5)[0], seqlens) == (128, 2)
    busiest, empty = _busiest(schedule_host(seqlens, 66, 2, whole=False)[0], seqlens)   # the greedy alone
    assert busiest < 128 and empty == 0
    assert _busiest(schedule_host(seqlens, 66, 2)[0], seqlens) == (128, 2)   # whole sequences: within F = 2
    monkeypatch.setattr(sched, "FIXED_OVERHEAD_TILES", 3)
    assert fixed_overhead(1) == fixed_overhead(32) == 2 and fixed_overhead(33) == fixed_overhead(64) == 5
    assert fixed_overhead(65) == fixed_overhead(256) == 3
    sl = torch.tensor(seqlens, dtype=torch.int32)
    for rows, fixed in ((16, 2), (64, 5), (128, 3)):
        meta, ns = get_mla_metadata(sl, rows, 1, num_sm_parts=66)
        assert _as_lists(meta, ns) == schedule_host(seqlens, 66, fixed)


def _as_lists(meta, ns):
    return meta.tolist(), ns.tolist()


@needs_interpreter
def test_triton_metadata_kernel_equals_host(monkeypatch):
    """The single-program Triton scheduler (interpreter) is bit-identical to schedule_host, with at most 32 rows
    (F = 2), one row tile (F = 5) and more (FIXED_OVERHEAD_TILES set to 3 here, so that a third F is exercised)."""
    monkeypatch.setattr(sched, "FIXED_OVERHEAD_TILES", 3)
    for k, (seqlens, parts) in enumerate(CASES[::2]):
        rows = (16, 64, 128)[k % 3]
        meta, ns = get_mla_metadata(torch.tensor(seqlens, dtype=torch.int32), rows, 1, num_sm_parts=parts)
        assert meta.dtype == torch.int32 and ns.dtype == torch.int32
        assert meta.shape == (parts, 8) and ns.shape == (len(seqlens) + 1,)
        assert _as_lists(meta, ns) == schedule_host(seqlens, parts, fixed_overhead(rows)), (seqlens, parts, rows)


@needs_interpreter
@pytest.mark.parametrize("whole", [True, False])
def test_triton_metadata_kernel_whole_sequences(whole, monkeypatch):
    """The Triton scheduler takes the whole-sequence layout exactly where schedule_host does (and not with
    WHOLE_SEQUENCES off)."""
    monkeypatch.setattr(sched, "WHOLE_SEQUENCES", whole)
    for seqlens, parts in (([8192] * 128, 66), ([4096] * 128, 33), ([8192] * 128, 33), ([300] * 3, 8), ([200], 8),
                           ([0, 65, 0], 8), ([8192] * 100 + [9000], 66)):
        meta, ns = get_mla_metadata(torch.tensor(seqlens, dtype=torch.int32), 128, 1, num_sm_parts=parts)
        assert _as_lists(meta, ns) == schedule_host(seqlens, parts, 5, whole=whole), (seqlens[:3], parts)


@needs_interpreter
def test_triton_metadata_kernel_batch_over_block():
    """batch > BLOCK_B (256) exercises the kernel's multi-chunk total."""
    rng = random.Random(5)
    seqlens = [rng.randint(0, 3000) for _ in range(300)]
    meta, ns = get_mla_metadata(torch.tensor(seqlens, dtype=torch.int32), 16, 1, num_sm_parts=11)
    assert _as_lists(meta, ns) == schedule_host(seqlens, 11, fixed_overhead(16))


@needs_interpreter
def test_triton_metadata_noncontiguous_seqlens():
    full = torch.tensor([7, 100, 64, 3, 65, 0, 129, 1], dtype=torch.int32)
    meta, ns = get_mla_metadata(full[::2], 16, 1, num_sm_parts=3)
    assert _as_lists(meta, ns) == schedule_host(full[::2].tolist(), 3, fixed_overhead(16))


def test_cpu_host_path_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    for k, (seqlens, parts) in enumerate(CASES):
        rows = 16 if k % 2 else 128
        meta, ns = get_mla_metadata(torch.tensor(seqlens, dtype=torch.int32), rows, 1, num_sm_parts=parts)
        assert meta.dtype == torch.int32 and ns.dtype == torch.int32
        assert meta.shape == (parts, 8) and ns.shape == (len(seqlens) + 1,)
        assert meta.device.type == "cpu" and ns.device.type == "cpu"
        assert _as_lists(meta, ns) == schedule_host(seqlens, parts, fixed_overhead(rows))


@pytest.mark.parametrize("sm", [None, 132, 78, 1])
@pytest.mark.parametrize("heads_per_k,h_kv", [(1, 1), (16, 1), (64, 1), (65, 1), (128, 1), (256, 1), (16, 2),
                                              (32, 4), (16, 200)])
def test_default_num_sm_parts(monkeypatch, sm, heads_per_k, h_kv):
    if sm is not None:
        monkeypatch.setattr(sched, "CPU_SM_COUNT", sm)
    sms = sched.CPU_SM_COUNT
    expected = max(1, sms // h_kv // math.ceil(heads_per_k / 64))
    seqlens = torch.tensor([100, 5, 0], dtype=torch.int32)
    meta, ns = get_mla_metadata(seqlens, heads_per_k, h_kv)
    assert meta.shape == (expected, 8) and ns.shape == (4,)
    assert _as_lists(meta, ns) == schedule_host([100, 5, 0], expected, fixed_overhead(heads_per_k))


@pytest.mark.parametrize("bad,exc,match", [
    (torch.tensor([1, 2], dtype=torch.int64), TypeError, "cache_seqlens"),
    (torch.tensor([1.0, 2.0]), TypeError, "cache_seqlens"),
    (torch.tensor([[1, 2]], dtype=torch.int32), ValueError, "cache_seqlens"),
    (torch.tensor(3, dtype=torch.int32), ValueError, "cache_seqlens"),
    ([1, 2], TypeError, "cache_seqlens"),
])
def test_bad_seqlens(bad, exc, match):
    with pytest.raises(exc, match=match):
        get_mla_metadata(bad, 16, 1)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_heads_per_head_k=16.0, num_heads_k=1), "num_heads_per_head_k"),
    (dict(num_heads_per_head_k=0, num_heads_k=1), "num_heads_per_head_k"),
    (dict(num_heads_per_head_k="16", num_heads_k=1), "num_heads_per_head_k"),
    (dict(num_heads_per_head_k=16, num_heads_k=1.0), "num_heads_k"),
    (dict(num_heads_per_head_k=16, num_heads_k=-1), "num_heads_k"),
    (dict(num_heads_per_head_k=16, num_heads_k=1, num_sm_parts=0), "num_sm_parts"),
    (dict(num_heads_per_head_k=16, num_heads_k=1, num_sm_parts=2.0), "num_sm_parts"),
    (dict(num_heads_per_head_k=16, num_heads_k=1, num_sm_parts=65536), "num_sm_parts must be at most 65535"),
])
def test_bad_int_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_mla_metadata(torch.tensor([5, 6], dtype=torch.int32), **kwargs)


# An empty batch (cache_seqlens of shape [0]) must not read SEQLENS[0] (once a crash under the interpreter,
# an out-of-bounds read on a GPU). Run in a subprocess so a crash fails this test, not the session.
@needs_interpreter
def test_empty_batch_metadata_does_not_crash():
    code = (
        "import torch\n"
        "from flash_mla import get_mla_metadata\n"
        "from flash_mla.scheduler import schedule_host\n"
        "try:\n"
        "    m, n = get_mla_metadata(torch.zeros(0, dtype=torch.int32), 16, 1, num_sm_parts=4)\n"
        "except ValueError as e:\n"
        "    print('rejected:', e)\n"
        "else:\n"
        "    assert (m.tolist(), n.tolist()) == schedule_host([], 4), (m.tolist(), n.tolist())\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (f"get_mla_metadata on an empty batch crashed or mismatched (exit code {r.returncode}; "
                               f"-11 = segfault from the out-of-bounds SEQLENS load)\n{r.stdout}\n{r.stderr[-2000:]}")
