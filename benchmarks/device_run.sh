#!/usr/bin/env bash
# One device call: GPU tests, then the benchmark (and optional extras), short table last.
#   bash benchmarks/device_run.sh [tests|ceilings|sweep|sanitize|consan|trace|latency|bench|ab|fvo|fmtrace|pairtrace|wstrace|cluster|asmwgmma]...
#        (default: tests ceilings bench)
#   ceilings: this card's copy bandwidth and bf16 matmul rate, as the anchors' run recorded them (two lent H100s ran
#        the same memory-bound kernels ~3 % apart: docs/perf-notes.md, session 13)
#   ab:  hopper_dev correctness under each of AB_CFGS (';'-separated, e.g. "auto:NAMED=0;auto:NAMED=1"), then the
#        configs timed interleaved AB_REPS times (default 2) over AB_HQ (default 16,32,64,128), non-varlen (AB_VARLEN=1:
#        and varlen)
#   fvo: FlashMLA built from source (.flashmla_src, see benchmarks/flashmla_src.sh; carry it) timed against ours in
#        one process over the whole matrix (FVO_REPS, default 4, ABBA order; FVO_SET="Q_TMA=2": ours with those
#        Hopper module constants)
#   fmtrace: FlashMLA's per-pair clock stamps (benchmarks/trace_flashmla.py; carry .flashmla_src), then trace_pair.py and
#        trace_ws.py (ws2) on the same shapes (FM_SHAPES, ';'-separated, default "8192 128 2 0")
#   cluster: the 2-CTA cluster / multicast checks of benchmarks/experiments/cluster_multicast/run_gpu.py
#   pairtrace: trace_pair.py (the paired kernel's per-pair SM clock stamps) on PT_SHAPE (default "8192 128 2 0")
#        under each of PT_SETS (';'-separated sets of pair_kernel constants, default ";ASM_S=1;ASM_S=1 ASM_PV=1")
#   wstrace: trace_ws.py kernel=ws2 (per-page steps, the softmax step X split) on WT_SHAPE (default "8192 128 2 0")
#        under each of WT_SETS (';'-separated, ','-joined ws2 constants, default: the default only)
#   asmwgmma: inline-PTX wgmma (uniform descriptors) against Gluon's: S checked against torch, S loop timed
#        (benchmarks/experiments/asm_wgmma/run_gpu.py)
# Full logs go to $OUT (the device tool's output folder) or ./device_out. Steps that may hang on a new kernel run
# under timeout (TESTS_TIMEOUT, AB_TIMEOUT; TESTS_K: a pytest -k expression, or "defaults": the tests of the kernels
# the launcher runs by default, without the opt-in variants (145 of 309); TESTS_RANGE=A,B: tests A..B of the
# suite in collection order, to finish a run that a timeout cut short). SMI_LOG=1: nvidia-smi samples
# (SM clock, power, throttle reasons) to smi_<steps>.csv. BENCH_SET="Q_TMA=1 ...": bench also with those Hopper module
# constants (benchmarks/bench_with.py), one run per space-separated set.
set -uo pipefail
OUT=${OUT:-device_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export FLASH_MLA_COMMIT=${FLASH_MLA_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}   # pass it: the device copy may carry a stale .git
steps=${*:-tests ceilings bench}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"
if [ -n "${SMI_LOG:-}" ]; then   # SM clock, power and throttle reasons every 100 ms for the whole call
  nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active \
    --format=csv -lms 100 > "$OUT/smi_${steps// /_}.csv" 2>&1 & SMI_PID=$!; trap 'kill $SMI_PID 2>/dev/null' EXIT
fi
if [ "${TESTS_K:-}" = defaults ]; then
  TESTS_K="not pair and not mc and not mnamed and not asmpv and not gluon and not qtma2 and not pdl and not mbar"
  TESTS_K="$TESTS_K and not cw0 and not lockstep"
fi
for step in $steps; do
  case $step in
    tests) targets="tests/test_gpu.py tests/test_gpu_serving.py"
           if [ -n "${TESTS_RANGE:-}" ]; then   # e.g. 196,261: those tests of the suite (collection order) only
             targets=$(python3 -m pytest --co -q $targets -p no:cacheprovider 2>/dev/null | grep '::' \
                       | sed -n "${TESTS_RANGE}p")
           fi
           set -f   # node ids hold [..]
           timeout "${TESTS_TIMEOUT:-450}" python3 -m pytest -q $targets \
             -p no:cacheprovider ${TESTS_K:+-k "$TESTS_K"} 2>&1 \
             | tee "$OUT/tests.log" | tail -n 25
           set +f ;;
    ceilings) python3 benchmarks/ceilings.py 2>&1 | tee "$OUT/ceilings.txt" ;;
    sanitize) for tool in memcheck racecheck; do
                PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool $tool --error-exitcode 1 \
                  python3 benchmarks/sanitize_small.py \
                  > "$OUT/sanitize_$tool.log" 2>&1; echo "compute-sanitizer $tool: exit $?"; tail -n 3 "$OUT/sanitize_$tool.log"
              done ;;
    consan) TRITON_INSTRUMENTATION_MODE=consan python3 benchmarks/sanitize_small.py > "$OUT/consan.log" 2>&1
            echo "triton consan: exit $?"; tail -n 5 "$OUT/consan.log" ;;
    trace) python3 benchmarks/trace_ws.py 8192 128 2 0 > "$OUT/trace_ws_h128s2.txt" 2>&1; tail -n 3 "$OUT/trace_ws_h128s2.txt"
           python3 benchmarks/profile_kernels.py > "$OUT/profile_kernels.txt" 2>&1; grep -v Warn "$OUT/profile_kernels.txt" | tail -n 12 ;;
    latency) python3 benchmarks/compile_latency.py 2>&1 | tee "$OUT/latency.log"
             python3 benchmarks/host_overhead.py --profile > "$OUT/host.log" 2>&1; grep "host time" "$OUT/host.log" ;;
    sweep) python3 benchmarks/triton_sweep.py 2>&1 | tee "$OUT/sweep.log" | grep BEST ;;
    bench) for be in ${BENCH_BACKENDS:-auto}; do
             python3 -m flash_mla.bench --backend "$be" --baseline benchmarks/anchors/flashmla_h100.json \
               --json "$OUT/bench_$be.json" 2>&1 | tee "$OUT/bench_$be.log"
           done
           for cfg in ${BENCH_SET:-}; do   # the same with module constants overridden (space-separated sets)
             tag=${cfg//[=,]/_}   # (files whose names hold '=' do not come back from the device)
             python3 benchmarks/bench_with.py "$cfg" --backend auto --baseline benchmarks/anchors/flashmla_h100.json \
               --json "$OUT/bench_auto_$tag.json" 2>&1 | tee "$OUT/bench_auto_$tag.log" | grep -E "overridden|geo-mean"
           done ;;
    ab) cfgs=${AB_CFGS:?set AB_CFGS}; rep=""
        for _ in $(seq "${AB_REPS:-2}"); do rep="$rep${rep:+;}$cfgs"; done
        timeout "${AB_TIMEOUT:-300}" python3 benchmarks/hopper_dev.py --check-cfgs --cfgs "$cfgs" --no-bench \
          > "$OUT/ab_check.log" 2>&1
        grep -E "^correctness" "$OUT/ab_check.log"
        timeout "${AB_TIMEOUT:-300}" python3 benchmarks/hopper_dev.py --no-check --backends hopper --cfgs "$rep" \
          --hq "${AB_HQ:-16,32,64,128}" ${AB_VARLEN:+--varlen} > "$OUT/ab.log" 2>&1; grep -E "^s_k" "$OUT/ab.log" | sed -E 's/ +[0-9]+ GB\/s +[0-9]+ TF//g' ;;
    fvo) python3 benchmarks/flashmla_vs_ours.py --reps "${FVO_REPS:-4}" ${FVO_SET:+--set "$FVO_SET"} \
           --json "$OUT/fvo.json" > "$OUT/fvo.log" 2>&1
         grep -E "built|geo-mean" "$OUT/fvo.log"; grep -E "ratio" "$OUT/fvo.log" | sed -E 's/ cos_diff.*//' ;;
    fmtrace) IFS=';' read -ra shapes <<< "${FM_SHAPES:-8192 128 2 0}"   # FlashMLA's own steps, then ours, same shapes
             for sh in "${shapes[@]}"; do tag=${sh// /_}
               python3 benchmarks/trace_flashmla.py $sh > "$OUT/trace_flashmla_$tag.txt" 2>&1
               grep -E "built|do_bench|median|traced|rror" "$OUT/trace_flashmla_$tag.txt" | tail -n 6
               python3 benchmarks/trace_pair.py $sh > "$OUT/trace_pair_$tag.txt" 2>&1; tail -n 1 "$OUT/trace_pair_$tag.txt"
               python3 benchmarks/trace_ws.py $sh kernel=ws2 > "$OUT/trace_ws2_$tag.txt" 2>&1; tail -n 1 "$OUT/trace_ws2_$tag.txt"
             done ;;
    pairtrace) IFS=';' read -ra sets <<< "${PT_SETS:-;ASM_S=1;ASM_S=1 ASM_PV=1}"   # the paired kernel's per-pair steps
               for st in "${sets[@]}"; do tag=${st// /_}; tag=${tag//=/}
                 python3 benchmarks/trace_pair.py ${PT_SHAPE:-8192 128 2 0} $st > "$OUT/trace_pair_${tag:-default}.txt" 2>&1
                 echo "pair ${st:-default}: $(tail -n 1 "$OUT/trace_pair_${tag:-default}.txt")"
               done ;;
    wstrace) IFS=';' read -ra sets <<< "${WT_SETS:-;}"   # ws2's per-page steps and its X split
             for st in "${sets[@]}"; do tag=${st//[=,]/_}
               timeout 120 python3 benchmarks/trace_ws.py ${WT_SHAPE:-8192 128 2 0} "kernel=ws2${st:+,$st}" \
                 > "$OUT/trace_ws2_${tag:-default}.txt" 2>&1
               echo "ws2 ${st:-default}:"; grep -E "X split|median" "$OUT/trace_ws2_${tag:-default}.txt"
             done ;;
    asmwgmma) (cd benchmarks/experiments/asm_wgmma && timeout 150 python3 run_gpu.py) > "$OUT/asm_wgmma.log" 2>&1
              echo "asm_wgmma: exit $?"; grep -E "check|loop" "$OUT/asm_wgmma.log" ;;
    cluster) (cd benchmarks/experiments/cluster_multicast && timeout 150 python3 run_gpu.py) > "$OUT/cluster.log" 2>&1
             echo "cluster: exit $?"; grep -E "ring|co-residency|RESULT" "$OUT/cluster.log" | tail -n 8 ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
