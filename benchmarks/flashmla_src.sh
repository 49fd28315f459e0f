#!/usr/bin/env bash
# Lays out FlashMLA at the anchors' commit (c2067be) with CUTLASS's headers (the submodule's commit afa1772)
# under .flashmla_src/FlashMLA (git-ignored, ~26 MB: small enough for the device tool's `carry`), from the local
# mirrors the `fetch` tool makes (github:deepseek-ai/FlashMLA, github:NVIDIA/cutlass). Nothing of it is committed;
# benchmarks/flashmla_vs_ours.py builds and times it on the device.
set -euo pipefail
MIRROR=${MIRROR:-/work/.mirror}
dst=${1:-.flashmla_src/FlashMLA}
rm -rf "$dst"; mkdir -p "$dst/csrc/cutlass"
git -C "$MIRROR/deepseek-ai+FlashMLA/repo" archive c2067be | tar x -C "$dst"
git -C "$MIRROR/NVIDIA+cutlass/repo" archive afa1772203677c5118fcd82537a9c8fefbcc7008 include tools/util/include \
  | tar x -C "$dst/csrc/cutlass"
du -sh "$dst"
