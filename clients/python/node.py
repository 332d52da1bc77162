"""Starts the real node for the client tests: a temporary data directory, a free port."""

from __future__ import annotations

import os
import re
import subprocess
import time

# The account the node creates at its first start, for its `admin` user.
ADMIN_ACCOUNT = "0" * 31 + "1"


def admin_token(data_dir: str) -> str:
    """The admin token the node wrote to its data directory before printing its address."""
    with open(os.path.join(data_dir, "admin.token")) as f:
        return f.read().strip()


def start_node(binary: str, data_dir: str) -> tuple[subprocess.Popen, str]:
    node = subprocess.Popen(
        [binary, "serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0",
         "--enable", "fault-injection"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 30
    assert node.stdout is not None
    while time.monotonic() < deadline:
        line = node.stdout.readline()
        if not line:
            break
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            return node, found.group(1)
    node.kill()
    raise RuntimeError("the node did not start")
