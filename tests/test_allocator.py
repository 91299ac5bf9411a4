"""sdtool.allocator: freed large blocks are reused without new page faults; SDTOOL_MALLOC=system opts out; the
command line applies the setting at start."""

import os
import signal
import subprocess
import sys

import pytest

import sdtool.allocator
from sdtool.cli import app as cli_app

# Four 64 MiB blocks allocated, touched and freed after a first one: 4 × 16 384 pages that glibc maps afresh each
# time (64 MiB is above its largest mmap threshold), or none when the heap keeps the freed block.
PROBE = """
import resource
from sdtool.allocator import keep_freed_memory
applied = keep_freed_memory()
block = bytearray(64 << 20)
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    block = bytearray(64 << 20)  # zero-filled: every page written
    del block
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(not sdtool.allocator.is_glibc(), reason="the setting is glibc's")


def _probe(malloc: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env["SDTOOL_MALLOC"] = malloc  # and glibc's own settings left at their defaults
    applied, faults = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                                     check=True).stdout.split()
    return applied, int(faults)


@glibc_only
def test_freed_blocks_are_reused_without_page_faults():
    applied, faults = _probe("")
    assert applied == "True" and faults < 1000, faults


@glibc_only
def test_system_opt_out_leaves_the_allocator_alone():
    applied, faults = _probe("system")
    assert applied == "False" and faults > 4 * 16384 // 2, faults


def test_command_line_applies_it_before_running(monkeypatch):
    calls = []
    monkeypatch.setattr(sdtool.allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(sys, "argv", ["sdtool", "--version"])
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stop:
            cli_app.main()
    finally:
        signal.signal(signal.SIGTERM, before)
    assert stop.value.code == 0 and calls == [1]
