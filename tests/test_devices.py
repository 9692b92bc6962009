"""The process-wide CPU allocator setting that large feature maps need (``keep_freed_cpu_memory``)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

# A child process (the setting is process-wide and cached): allocate, touch and free a 96 MB
# tensor twice, and count the page faults of the second round.
_PROBE = textwrap.dedent(
    """
    import resource, sys, torch
    from demo.devices import keep_freed_cpu_memory
    if sys.argv[1] == "keep":
        assert keep_freed_cpu_memory() and keep_freed_cpu_memory()  # idempotent
    def round_trip():
        x = torch.empty(24 * 2**20)
        x.fill_(1.0)
        del x
    round_trip()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    round_trip()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _second_round_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120, check=True)
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_cpu_memory_is_reused_without_page_faults():
    """By default glibc unmaps a freed 96 MB block, so reallocating it faults in ~24k pages again;
    with the setting the freed pages are reused."""
    default, kept = _second_round_faults("default"), _second_round_faults("keep")
    pages = 96 * 2**20 // 4096
    assert default > pages // 2
    assert kept < pages // 20
