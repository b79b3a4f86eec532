#!/usr/bin/env bash
# The Ray engine on one GPU machine (one H100 or H200): AMI replicated to 750,000 turns (about 1M
# utterances), one GPU embedding worker beside the CPUs for segmenting, then codes (on a sample, cuML
# when installed), map, shift and report end to end. Writes bench/results/scale_gpu.json.
#   bench/scale_gpu.sh [TURNS]
# Needs the [scale] extra and a CUDA build of torch in the venv (the Makefile installs the CPU build):
#   .venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
#   .venv/bin/pip install -e '.[scale]'
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0
"$PY" -c 'import ray.data' 2>/dev/null || { echo "needs Ray: $PY -m pip install -e '.[scale]'" >&2; exit 2; }
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "torch sees no CUDA device: install a CUDA build of torch")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
config=$(mktemp --suffix=.toml)
trap 'rm -f "$config"' EXIT
# A GPU wants far larger forward passes than the CPU defaults (64 sentences, 2,048 tokens).
cat > "$config" <<'TOML'
[embed]
device = "cuda"
batch_size = 1024
batch_tokens = 131072
TOML
"$PY" bench/scale.py --utterances "${1:-750000}" --workers 1 --cpus "$(nproc)" --config "$config" --end-to-end
