#!/usr/bin/env bash
# The client tests, against the node binary given: a client that reads the OpenAPI document
# at run time (docclient.py, every request and answer checked against it), then one that
# openapi-python-client generates from the document (generation must be free of warnings).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binary=$(realpath "${1:?usage: run_tests.sh path/to/flatstack}")
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  jsonschema openapi-python-client prometheus-client
python3 "$here/test_lifecycle.py" "$binary"
python3 "$here/test_metrics.py" "$binary"
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
"$binary" openapi > "$gen/openapi.json"
if ! python3 -m openapi_python_client generate --path "$gen/openapi.json" --meta none \
  --config "$here/generator.yaml" --output-path "$gen/flatstack_client" > "$gen/log" 2>&1 \
  || grep -qi "warning\|unable" "$gen/log"; then
  cat "$gen/log"
  echo "openapi-python-client could not generate a clean client from the document" >&2
  exit 1
fi
PYTHONPATH="$gen" python3 "$here/test_generated.py" "$binary"
