"""Resolve requirements.txt for another Python version with pip, installing nothing.

    python tests/resolve_requirements.py 3.10 OUTDIR      # -> OUTDIR/3.10.json (pip's report), .log, .rc

The Hugging Face ZeroGPU Space runs Python 3.10; this machine and CI run 3.11. pip's own resolver
(what a Space runs) is asked, with ``--dry-run --python-version``, which wheels it would install for
a manylinux x86_64 CPython of that version: only metadata is fetched. ``.ci/run`` starts it for both
versions in the background while it installs; ``tests/test_install.py`` reads the reports (or runs
this itself when ``FACE3D_RESOLVE_REPORTS`` is not set). Standard library only: it runs before
anything is installed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A Space's image is Debian 12 (glibc 2.36): it accepts every manylinux tag up to 2_36. pip does not
# expand PEP 600 tags given with --platform, so list them (torch is manylinux_2_28, numpy 2_17, ...).
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]


def pip_dry_run_command(python_version: str, report: Path, requirements: Path = REPO / "requirements.txt") -> list[str]:
    """pip's command line resolving ``requirements`` for CPython ``python_version`` ("3.10") on Linux x86_64."""
    abi = "cp" + python_version.replace(".", "")
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:"]
    command += ["--python-version", python_version, "--implementation", "cp", "--abi", abi]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    # pip 23 wants --target with platform options even for a dry run; nothing is written there.
    command += ["--target", tempfile.mkdtemp(prefix=f"resolve-{abi}-")]
    command += ["--disable-pip-version-check", "--quiet", "--report", str(report), "-r", str(requirements)]
    return command


def resolve(python_version: str, outdir: Path) -> int:
    """Run the dry run; write ``<version>.json`` (pip's report), ``.log`` and ``.rc`` into ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    report = outdir / f"{python_version}.json"
    with open(outdir / f"{python_version}.log", "w") as log:
        returncode = subprocess.call(pip_dry_run_command(python_version, report), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    (outdir / f"{python_version}.rc").write_text(f"{returncode}\n")
    return returncode


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(resolve(sys.argv[1], Path(sys.argv[2])))
