#!/usr/bin/env bash
# The integration examples (billing, policy, events-http), run against the node binary
# given and the RabbitMQ at $FLATSTACK_TEST_AMQP_URL (default: the local one).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binary=$(realpath "${1:?usage: run_tests.sh path/to/flatstack}")
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore pika requests
python3 "$here/test_examples.py" "$binary"
