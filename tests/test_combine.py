"""The split combine kernel (flash_mla/combine.py) on its own, against the merge formula in float64: every piece
count (one piece: left untouched; up to and past the kernel's BLOCK_S = 32 lse per load), pieces in which a row
saw no key (lse = -inf), rows that saw no key at all (out = 0, lse = +inf). CPU: Triton's interpreter."""
import math
import os

import pytest
import torch

from flash_mla.combine import combine_splits

triton_cpu = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="needs CUDA or TRITON_INTERPRET=1")


def merge_reference(pieces_o, pieces_lse):
    """pieces_o [n, R, dv], pieces_lse [n, R] (natural log) -> out [R, dv], lse [R] in float64."""
    lse = torch.logsumexp(pieces_lse.double(), dim=0)
    w = torch.exp(pieces_lse.double() - lse[None]).nan_to_num(0.0)
    out = (w[:, :, None] * pieces_o.double()).sum(0)
    return out, lse.masked_fill(torch.isneginf(lse), math.inf)


@triton_cpu
@pytest.mark.parametrize("seed", [0, 1])
def test_combine_piece_counts(seed):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(seed)
    counts = [1, 2, 3, 4, 5, 7, 40, 1]            # pieces per sequence, on both sides of BLOCK_S = 32
    b, s_q, h_q, dv = len(counts), 2, 3, 512
    R = s_q * h_q
    num_splits = torch.tensor([0] + list(torch.tensor(counts).cumsum(0)), dtype=torch.int32)
    slots = int(num_splits[-1])
    o_acc = torch.randn(slots, 1, R, dv, generator=gen)
    lse_acc = torch.randn(slots, 1, R, generator=gen) * 3
    lse_acc[num_splits[1], 0, 0] = -math.inf           # a row that saw no key in one piece
    lse_acc[num_splits[2]:num_splits[3], 0, 1] = -math.inf  # a row that saw no key in any piece
    out = torch.full((b, s_q, h_q, dv), math.nan)   # float32 output: the merge's own error only
    lse = torch.full((b, h_q, s_q), math.nan)
    args = [t.to(device) for t in (num_splits, o_acc, lse_acc, out, lse)]
    combine_splits(*args)
    out, lse = args[3].cpu(), args[4].cpu()
    for i, n in enumerate(counts):
        if n == 1:   # written by the attention kernel, left alone here (still the NaN it was filled with)
            assert out[i].isnan().all() and lse[i].isnan().all()
            continue
        s0 = int(num_splits[i])
        ref_o, ref_l = merge_reference(o_acc[s0:s0 + n, 0], lse_acc[s0:s0 + n, 0])
        got_o = out[i].reshape(R, dv).double()          # rows are (token, head), token-major
        got_l = lse[i].transpose(0, 1).reshape(R).double()
        torch.testing.assert_close(got_l, ref_l, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_o, ref_o, atol=1e-5, rtol=1e-5)
        if i == 2:
            assert torch.isinf(got_l[1]) and got_l[1] > 0 and (got_o[1] == 0).all()
