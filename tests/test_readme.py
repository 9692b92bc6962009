"""README's quick start runs offline, as printed.

The block after the ``<!-- quick-start ... -->`` marker in README.md is run line by line in one
empty folder, with the Hugging Face Hub offline and its endpoint unreachable (nothing can be
downloaded) and an empty checkpoints folder. Each line must exit 0 and make what its comment promises
after "→": files (relative to that folder) or, for a server, an address that answers. ``python`` is
this interpreter; ``python app.py`` runs a copy of app.py in that folder on a free port.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- quick-start"
ARROW = "→"


@dataclass(frozen=True)
class QuickStartLine:
    command: str
    """The shell line as README prints it, without its comment."""
    promises: tuple[str, ...]
    """Paths (relative to the folder it runs in) or one http:// address, from the comment after "→"."""


def quick_start_lines(readme: str) -> list[QuickStartLine]:
    """The lines of the first ```bash block after the quick-start marker."""
    start = readme.find(MARKER)
    assert start >= 0, f"README.md has no {MARKER} ... --> marker before the quick-start block"
    match = re.compile(r"^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE).search(readme, start)
    assert match, "no ```bash block after the quick-start marker"
    lines = []
    for raw in match.group(1).splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        command, _, comment = raw.partition(" #")
        assert not command.rstrip().endswith("\\"), "keep quick-start commands on one line each"
        promises = tuple(re.split(r"[\s,]+", comment.split(ARROW, 1)[1].strip())) if ARROW in comment else ()
        lines.append(QuickStartLine(command.strip(), promises))
    return lines


LINES = quick_start_lines((REPO / "README.md").read_text(encoding="utf-8"))


def test_the_quick_start_tries_everything_without_a_download():
    assert len(LINES) >= 3
    for line in LINES:
        argv = shlex.split(line.command)
        assert argv[0] == "python", f"quick-start lines start with `python`: {line.command}"
        if argv[1:3] == ["-m", "demo"] and argv[3] not in ("models",):
            assert "--model" in argv and argv[argv.index("--model") + 1].startswith("tiny"), (
                f"without `--model tiny` this needs a download, so it fails offline: {line.command}"
            )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _offline_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "SPACE", "DEMO_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_ENDPOINT="http://127.0.0.1:9",  # nothing listens on the discard port: any download fails at once
        HF_HOME=str(folder / ".hf"),
        DEMO_CHECKPOINTS_DIR=str(folder / ".checkpoints"),
        GRADIO_ANALYTICS_ENABLED="False",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    return env


def _serve_and_stop(argv: list[str], url: str, folder: Path, env: dict[str, str]) -> None:
    port = _free_port()
    url = re.sub(r":\d+", f":{port}", url, count=1)
    proc = subprocess.Popen(argv, cwd=folder, env={**env, "PORT": str(port)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"`{' '.join(argv)}` exited with {proc.returncode}:\n{proc.stdout.read()[-3000:]}"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    assert response.status == 200
                    return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"`{' '.join(argv)}` did not answer on {url} within 120 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_every_quick_start_line_runs_offline_as_printed(tmp_path):
    env = _offline_env(tmp_path)
    for line in LINES:
        argv = shlex.split(line.command)
        argv[0] = sys.executable
        if argv[1:2] == ["app.py"]:
            shutil.copy(REPO / "app.py", tmp_path / "app.py")
        if line.promises and line.promises[0].startswith("http"):
            _serve_and_stop(argv, line.promises[0], tmp_path, env)
            continue
        out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 0, f"`{line.command}` exited with {out.returncode} offline:\n{out.stderr[-3000:]}"
        missing = [p for p in line.promises if not (tmp_path / p).is_file() or (tmp_path / p).stat().st_size == 0]
        assert not missing, f"`{line.command}` did not write {missing}"
    assert not list((tmp_path / ".hf").rglob("*.pkl")) and not (tmp_path / ".checkpoints").exists(), "something was downloaded"
