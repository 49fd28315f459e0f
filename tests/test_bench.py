"""CPU tests of the benchmark (``flash_mla.bench``): the protocol's inputs, formulas, baseline ratios, the JSON
report, and the CPU demo of ``python -m flash_mla.bench``."""
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

bench = pytest.importorskip("flash_mla.bench")

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = ROOT / "benchmarks" / "anchors" / "flashmla_h100.json"


def small(s=256, h_q=16, s_q=1, varlen=False, b=3):
    return bench.Config(s, h_q, s_q, varlen, b)


# ------------------------------------------------------------------ matrix

def test_matrix_is_flashmlas_32_configs():
    cfgs = bench.matrix()
    assert len(cfgs) == 32 and len({c.key for c in cfgs}) == 32
    assert {c.s for c in cfgs} == {4096, 8192} and {c.h_q for c in cfgs} == {16, 32, 64, 128}
    assert {c.s_q for c in cfgs} == {1, 2} and {c.varlen for c in cfgs} == {False, True}
    assert all(c.b == 128 and c.causal for c in cfgs)
    assert cfgs[0].key == (4096, 16, 1, False) and cfgs[1].key == (4096, 16, 1, True)
    assert cfgs[-1].key == (8192, 128, 2, True)


def test_matrix_filters():
    cfgs = bench.matrix(s=[8192], h_q=[64, 128], s_q=[2], varlen=[True], b=5)
    assert [c.key for c in cfgs] == [(8192, 64, 2, True), (8192, 128, 2, True)]
    assert all(c.b == 5 for c in cfgs)


# ------------------------------------------------------------------ inputs

def test_seqlens_fixed():
    assert bench.gen_seqlens(small(s=300, b=4)) == [300] * 4


def test_seqlens_varlen_follow_protocol():
    cfg = bench.Config(4096, 16, 2, True, 128)
    lens = bench.gen_seqlens(cfg, seed=0)
    random.seed(0)   # the anchor's text, literally
    expect = [max(int(random.normalvariate(4096, 4096 / 2)), 2) for _ in range(128)]
    assert lens == expect
    assert len(lens) == 128 and min(lens) >= cfg.s_q and len(set(lens)) > 100
    assert bench.gen_seqlens(cfg, seed=0) == lens          # deterministic, global state not needed
    assert bench.gen_seqlens(cfg, seed=1) != lens


def test_seqlens_never_below_s_q():
    # mean 2 with sd 1: many draws fall below s_q = 2 and must be clamped
    lens = bench.gen_seqlens(bench.Config(2, 16, 2, True, 200))
    assert min(lens) == 2


def test_pad_seqlen():
    assert [bench.pad_seqlen(x) for x in (1, 256, 257, 4096, 4097)] == [256, 256, 512, 4096, 4352]


def test_block_table_is_a_seeded_permutation_of_all_pages():
    bt = bench.make_block_table(b=3, max_seqlen=300, page_size=64, seed=0)
    pad = 512                                               # ceil(300 / 256) * 256
    assert bt.dtype == torch.int32 and bt.shape == (3, pad // 64)
    assert torch.equal(bt.flatten().sort().values, torch.arange(3 * pad // 64, dtype=torch.int32))
    expect = torch.randperm(3 * pad // 64, generator=torch.Generator().manual_seed(0)).int().reshape(3, -1)
    assert torch.equal(bt, expect)
    assert not torch.equal(bt.flatten(), torch.arange(bt.numel(), dtype=torch.int32))   # really shuffled


@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_make_inputs(varlen, dtype):
    cfg = small(s=200, h_q=32, s_q=2, varlen=varlen, b=4)
    inp = bench.make_inputs(cfg, dtype, "cpu", seed=0)
    q, kc, bt, sl = inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"]
    lens = inp["seqlens"]
    pad = bench.pad_seqlen(max(lens))
    assert q.shape == (4, 2, 32, 576) and q.dtype == dtype
    assert kc.shape == (4 * pad // 64, 64, 1, 576) and kc.dtype == dtype
    assert bt.shape == (4, pad // 64) and bt.dtype == torch.int32
    assert sl.dtype == torch.int32 and sl.tolist() == lens == bench.gen_seqlens(cfg)
    assert min(lens) >= cfg.s_q
    assert torch.equal(bt.flatten().sort().values, torch.arange(bt.numel(), dtype=torch.int32))
    assert torch.isfinite(q).all()
    # each sequence's own rows are finite, everything past its length is NaN
    for i, L in enumerate(lens):
        rows = kc[bt[i].long()].flatten(0, 1)               # [pad, 1, 576]
        assert torch.isfinite(rows[:L]).all()
        assert rows[L:].isnan().all()
    again = bench.make_inputs(cfg, dtype, "cpu", seed=0)
    assert torch.equal(again["q"], q) and torch.equal(again["block_table"], bt)


def test_make_inputs_without_nan_tail():
    inp = bench.make_inputs(small(s=100, b=2), torch.bfloat16, "cpu", nan_tail=False)
    assert torch.isfinite(inp["k_cache"]).all()


# ------------------------------------------------------------------ formulas

def test_flops_bytes_hand_computed():
    cfg = bench.Config(s=150, h_q=16, s_q=2, varlen=True, b=2)
    flops, nbytes = bench.flops_bytes(cfg, total_seqlens=300)
    assert flops == 2 * 300 * 16 * (576 + 512) * 2 == 20_889_600
    assert nbytes == (300 * 1 * 576 + 2 * 2 * 16 * 576 + 2 * 2 * 16 * 512) * 2 == 484_864


@pytest.mark.skipif(not ANCHOR.exists(), reason="anchor file not in the tree")
def test_formulas_and_seqlens_reproduce_the_anchor():
    """The anchor's TFLOPS and GB/s follow from its ms with our seqlens (varlen too) and formulas."""
    rows = json.loads(ANCHOR.read_text())["rows"]
    assert len(rows) == 32
    for r in rows:
        cfg = bench.Config(r["s"], r["h_q"], r["s_q"], r["varlen"])
        flops, nbytes = bench.flops_bytes(cfg, sum(bench.gen_seqlens(cfg)))
        assert flops / r["ms"] / 1e9 == pytest.approx(r["tflops"], rel=1e-3), r
        assert nbytes / r["ms"] / 1e6 == pytest.approx(r["gbs"], rel=1e-3), r


# ------------------------------------------------------------------ baseline, ratios, report

def write_baseline(tmp_path):
    doc = {"what": "test", "rows": [
        {"s": 4096, "h_q": 16, "s_q": 1, "varlen": False, "ms": 0.5, "triton_ms": 1.0},
        {"s": 4096, "h_q": 16, "s_q": 2, "varlen": True, "ms": 0.25, "triton_ms": None},
    ]}
    path = tmp_path / "base.json"
    path.write_text(json.dumps(doc))
    return path


def test_baseline_ratio_lookup(tmp_path):
    base = bench.load_baseline(write_baseline(tmp_path))
    assert set(base) == {(4096, 16, 1, False), (4096, 16, 2, True)}
    r = bench.add_ratios(dict(s=4096, h_q=16, s_q=1, varlen=False, ms=0.25), base)
    assert r["baseline_ms"] == 0.5 and r["ratio"] == pytest.approx(2.0)
    assert r["triton_ms"] == 1.0 and r["ratio_triton"] == pytest.approx(4.0)
    r = bench.add_ratios(dict(s=4096, h_q=16, s_q=2, varlen=True, ms=0.5), base)
    assert r["ratio"] == pytest.approx(0.5) and r["triton_ms"] is None and r["ratio_triton"] is None
    r = bench.add_ratios(dict(s=8192, h_q=16, s_q=1, varlen=False, ms=0.5), base)   # not in the baseline
    assert r["baseline_ms"] is None and r["ratio"] is None
    r = bench.add_ratios(dict(s=4096, h_q=16, s_q=1, varlen=False, ms=0.25), None)  # no baseline at all
    assert r["ratio"] is None and r["ratio_triton"] is None


@pytest.mark.skipif(not ANCHOR.exists(), reason="anchor file not in the tree")
def test_anchor_file_loads_as_baseline():
    base = bench.load_baseline(ANCHOR)
    assert len(base) == 32
    assert base[(4096, 16, 1, False)]["ms"] == pytest.approx(0.2318)
    assert base[(4096, 16, 2, False)]["triton_ms"] is None


def test_geomean():
    assert bench.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert bench.geomean([None, 3.0]) == pytest.approx(3.0)
    assert bench.geomean([None]) is None and bench.geomean([]) is None


def fake_rows(base):
    rows = [dict(s=4096, h_q=16, s_q=1, varlen=False, b=128, ms=0.25, tflops=1.0, gbs=2.0, backend="triton"),
            dict(s=4096, h_q=16, s_q=2, varlen=True, b=128, ms=1.0, tflops=1.0, gbs=2.0, backend="triton"),
            dict(s=8192, h_q=64, s_q=1, varlen=False, b=128, ms=1.0, tflops=1.0, gbs=2.0, backend="triton")]
    return [bench.add_ratios(r, base) for r in rows]


def test_format_table(tmp_path):
    rows = fake_rows(bench.load_baseline(write_baseline(tmp_path)))
    lines = bench.format_table(rows).splitlines()
    assert len(lines) == 1 + 3 + 1
    assert lines[0].split()[:10] == ["s", "h_q", "s_q", "varlen", "backend", "ms", "TFLOPS", "GB/s", "anchor_ms",
                                     "ratio"]
    assert "triton_ms" in lines[0]
    assert "2.000" in lines[1] and "4.000" in lines[1]          # ratio and vs-triton
    assert lines[-1].startswith("geo-mean ratio")
    assert f"{math.sqrt(2.0 * 0.25):.3f}" in lines[-1]          # geo-mean of 2.0 and 0.25
    widths = {len(line) for line in lines[:-1]}
    assert len(widths) == 1                                      # missing values keep the columns aligned


def test_build_report_json_fields(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "git_commit", lambda: "abc1234")
    rows = fake_rows(bench.load_baseline(write_baseline(tmp_path)))
    rep = json.loads(json.dumps(bench.build_report(rows, device="GPU X", dtype="bf16", backend="triton",
                                                   baseline="base.json")))
    for key in ("device", "date", "dtype", "backend", "commit", "rows", "geomean_ratio", "geomean_ratio_triton"):
        assert key in rep, key
    assert rep["device"] == "GPU X" and rep["dtype"] == "bf16" and rep["commit"] == "abc1234"
    assert rep["geomean_ratio"] == pytest.approx(math.sqrt(0.5))
    assert rep["geomean_ratio_triton"] == pytest.approx(4.0)
    for r in rep["rows"]:
        for key in ("s", "h_q", "s_q", "varlen", "ms", "tflops", "gbs", "baseline_ms", "ratio", "triton_ms",
                    "ratio_triton"):
            assert key in r, key


def test_git_commit_falls_back_to_env(monkeypatch):
    def no_git(*a, **k):
        raise OSError("no git")
    monkeypatch.setattr(bench.subprocess, "run", no_git)
    monkeypatch.setenv("FLASH_MLA_COMMIT", "feed123")
    assert bench.git_commit() == "feed123"
    monkeypatch.delenv("FLASH_MLA_COMMIT")
    assert bench.git_commit() == "unknown"


def test_plot_without_matplotlib_is_skipped(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # makes "import matplotlib" raise ImportError
    assert bench.plot(fake_rows(None), str(tmp_path / "x.png")) is False
    assert "matplotlib" in capsys.readouterr().out
    assert not (tmp_path / "x.png").exists()


def test_cos_diff():
    x = torch.randn(100)
    assert bench.cos_diff(x, x) == pytest.approx(0.0, abs=1e-12)
    assert bench.cos_diff(x, -x) == pytest.approx(2.0)


# ------------------------------------------------------------------ running (reference backend on CPU)

def test_run_config_reference_with_check():
    row = bench.run_config(small(s=130, h_q=16, s_q=2, varlen=True, b=3), torch.bfloat16, "cpu",
                           backend="reference", check=True, cpu_reps=1)
    assert row["backend"] == "reference"
    assert row["ms"] > 0 and row["tflops"] > 0 and row["gbs"] > 0
    assert row["check_ok"] and row["check_seqs"] == 3
    assert row["cos_diff_out"] < 1e-5 and row["cos_diff_lse"] < 1e-5 and row["rel_l2_out"] < 1e-2


def test_check_subset_catches_a_wrong_output():
    cfg = small(s=100, b=4)
    inp = bench.make_inputs(cfg, torch.bfloat16, "cpu")
    from flash_mla.reference import mla_decode_reference
    out, lse = mla_decode_reference(inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"], 512,
                                    576 ** -0.5, True)
    assert bench.check_subset(inp, out, lse)["check_ok"]
    bad = out.clone()
    bad[-1] = torch.randn_like(bad[-1])                          # the last sequence is always checked
    assert not bench.check_subset(inp, bad, lse)["check_ok"]


def test_main_writes_json(tmp_path, capsys):
    base = write_baseline(tmp_path)
    out = tmp_path / "res.json"
    rc = bench.main(["--cpu", "--backend", "reference", "--s", "4096", "--b", "1", "--h-q", "16", "--s-q", "1",
                     "--varlen", "0", "--baseline", str(base), "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "CPU DEMO" in text and "not a benchmark" in text.lower()
    assert text.rstrip().splitlines()[-1].startswith("geo-mean ratio")   # the table comes last
    rep = json.loads(out.read_text())
    assert rep["demo"] is True and rep["dtype"] == "bf16" and rep["backend"] == "reference"
    assert len(rep["rows"]) == 1
    row = rep["rows"][0]
    assert (row["s"], row["h_q"], row["s_q"], row["varlen"]) == (4096, 16, 1, False)
    assert row["baseline_ms"] == 0.5 and row["ratio"] == pytest.approx(0.5 / row["ms"])


def test_cli_cpu_demo_runs():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FLASH_MLA_BACKEND", None)
    proc = subprocess.run([sys.executable, "-m", "flash_mla.bench", "--cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CPU DEMO" in proc.stdout and "NOT a benchmark" in proc.stdout
    assert "reference" in proc.stdout and "FAIL" not in proc.stdout
    if os.environ.get("TRITON_INTERPRET") == "1":
        assert " triton " in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("geo-mean ratio")
