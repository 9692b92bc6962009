"""The process-wide CPU allocator setting that large feature maps need (``keep_freed_cpu_memory``)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

# Run in a child process (the setting is process-wide and cached): N "frames" that each make
# large feature maps from each other and free them, as a network does; print each frame's page
# faults, then the resident memory after each frame.
_PROBE = textwrap.dedent(
    """
    import resource, sys, torch
    from demo.devices import keep_freed_cpu_memory
    if sys.argv[1] == "keep":
        assert keep_freed_cpu_memory() and keep_freed_cpu_memory()  # idempotent
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def resident():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    def frame():
        x = torch.ones(16 * 2**20)             # 64 MB
        y = torch.empty(32 * 2**20).fill_(2)   # 128 MB
        z = x.repeat(2) * y                    # 2 x 128 MB
        del x
        w = z[: 8 * 2**20] + 1                 # 32 MB
        del y, z
        return float(w[0])
    counts, sizes = [], []
    for _ in range(int(sys.argv[2])):
        before = faults()
        frame()
        counts.append(faults() - before)
        sizes.append(resident())
    print(*counts)
    print(*sizes)
    """
)


def _frames(mode: str, count: int) -> tuple[list[int], list[int]]:
    """Page faults and resident bytes after each of ``count`` frames."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, mode, str(count)], capture_output=True, text=True, timeout=120, check=True
    )
    faults, sizes = result.stdout.strip().splitlines()[-2:]
    return [int(v) for v in faults.split()], [int(v) for v in sizes.split()]


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or sys.platform != "linux", reason="mallopt is glibc's; /proc is Linux's"
)
def test_freed_cpu_memory_is_reused_and_stays_bounded():
    """By default glibc unmaps every freed block above 32 MB, so each frame faults its ~480 MB in
    again (~120k pages). With the setting the heap settles within a few frames (a freed block
    can be a little too small for the next aligned request, so it may grow by a block or two
    first); then frames reuse its pages and the resident memory stays flat."""
    default, _ = _frames("default", 3)
    assert default[0] > 100_000, default  # the probe really touches ~480 MB per frame
    assert min(default[1:]) > default[0] // 2, default
    kept, sizes = _frames("keep", 40)
    assert max(kept[-15:]) < kept[0] // 20, kept
    assert max(sizes[-15:]) == min(sizes[-15:]), [size >> 20 for size in sizes]
    assert sizes[-1] - sizes[0] <= 512 * 2**20, [size >> 20 for size in sizes]  # about one frame's peak
