#!/usr/bin/env bash
# Run benchmark suites on the current machine, one pytest-benchmark JSON and one Markdown table each.
#   benchmarks/run.sh OUT_DIR [SUITE ...]      (suites: optim kan ssm sdm ntk hessian scaling)
# Each suite gets at most SUITE_TIMEOUT seconds (default 540).
set -uo pipefail
out=${1:?usage: benchmarks/run.sh OUT_DIR [SUITE ...]}
shift
suites=${*:-optim kan ssm sdm ntk hessian}
mkdir -p "$out"
python -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
for suite in $suites; do
  echo "== $suite"
  timeout "${SUITE_TIMEOUT:-540}" python -m pytest "benchmarks/test_$suite.py" -q -p no:cacheprovider \
    --benchmark-json="$out/$suite.json" 2>&1 | grep -E "passed|failed|error|Error" | tail -5
  [ -s "$out/$suite.json" ] && python -m benchmarks.report "$out/$suite.json" | tee "$out/$suite.md"
done
