#!/usr/bin/env bash
# Installs neural-tangents 0.6.5 (JAX, CPU) in its own venv, beside ntkit, as the
# reference for benchmarks and fixture scripts. Never a dependency of ntkit.
#   bash benchmarks/setup_reference.sh [VENV_DIR]   (default: .venv-nt)
set -euo pipefail
venv=${1:-.venv-nt}
python3 -m venv "$venv"
"$venv/bin/pip" install -q "jax[cpu]==0.4.23" "jaxlib==0.4.23" "numpy<2" scipy frozendict
"$venv/bin/pip" install -q "neural-tangents==0.6.5" --no-deps
echo "neural-tangents installed in $venv"
