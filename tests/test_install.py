"""The install works where the app runs: Python 3.10 (the ZeroGPU Space) and 3.11 (local, CI).

- requirements.txt resolves with pip for both Pythons (``tests/resolve_requirements.py``; ``.ci/run``
  runs it in the background while it installs and passes the reports in ``FACE3D_RESOLVE_REPORTS``),
  to the same face stack on both and without the heavy packages the app never imports;
- every module the Space imports (``demo/``, ``app.py``) compiles with a real Python 3.10 and imports
  nothing from the standard library that 3.10 lacks (``typing.Self``, ``tomllib``, ...).

The full proof, a Python 3.10 virtual environment that installs requirements.txt and runs the README
quick start (``tests/test_readme.py``), is ``CI_PY310_SMOKE=1 .ci/run`` (README, "Set up").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from glob import glob
from pathlib import Path

import pytest

from tests.resolve_requirements import REPO, pip_dry_run_command

SPACE_PYTHON = "3.10"
LOCAL_PYTHON = "3.11"
PYTHONS = (SPACE_PYTHON, LOCAL_PYTHON)

# Never wanted: each pulls gigabytes (a CUDA torch, jaxlib) or a second cv2 package.
UNWANTED = {"torchvision", "timm", "jax", "jaxlib", "tensorflow", "opencv-python", "opencv-python-headless"}
# What the Space must run in the same version as the tests do.
SAME_ON_BOTH = ("torch", "numpy", "mediapipe", "opencv-contrib-python", "protobuf", "gradio", "huggingface-hub", "trimesh")


def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


# --- static checks of the files (fast, no network) ---------------------------------------------


def test_requirements_pin_what_must_be_pinned():
    lines = _requirement_lines(REPO / "requirements.txt")
    names = {re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower().replace("_", "-") for line in lines}
    assert "torch==2.13.0" in lines, "torch must stay pinned exactly (the local CPU wheel here, CUDA on a Space)"
    assert not names & UNWANTED, f"requirements.txt lists {sorted(names & UNWANTED)}"
    mediapipe = [line for line in lines if line.startswith("mediapipe")]
    assert len(mediapipe) == 1 and "==" in mediapipe[0], "mediapipe is pinned: only some releases bundle the face models"
    assert _requirement_lines(REPO / "requirements-dev.txt")[0] == "-r requirements.txt"


def test_pyproject_admits_both_pythons():
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.MULTILINE)
    assert match, "pyproject.toml has no requires-python"
    assert match.group(1) == ">=3.10", f"requires-python {match.group(1)!r} must admit the Space's Python 3.10"


# --- pip resolves requirements.txt for both Pythons --------------------------------------------


def _index_reachable() -> bool:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/pip/"
    try:
        with urllib.request.urlopen(index, timeout=15):
            return True
    except Exception:  # noqa: BLE001 -- any failure means: no index to ask
        return False


@pytest.fixture(scope="module")
def resolutions() -> dict[str, tuple[int, dict | None, str]]:
    """python version -> (pip's exit code, its report, the end of its log)."""
    reports = os.environ.get("FACE3D_RESOLVE_REPORTS")
    if reports:  # .ci/run resolved both while it installed
        outdir = Path(reports)
        missing = [v for v in PYTHONS if not (outdir / f"{v}.rc").is_file()]
        assert not missing, f"FACE3D_RESOLVE_REPORTS={reports} lacks the results for Python {missing}"
    else:
        if not _index_reachable():
            pytest.skip("the package index is unreachable: cannot resolve requirements.txt for Python 3.10 / 3.11")
        outdir = Path(tempfile.mkdtemp(prefix="resolve-"))
        procs = {}
        for version in PYTHONS:  # both at once: mostly waiting on the network
            log = open(outdir / f"{version}.log", "w")  # noqa: SIM115 -- closed once pip exits, below
            procs[version] = (subprocess.Popen(pip_dry_run_command(version, outdir / f"{version}.json"), cwd=REPO,
                                               stdout=log, stderr=subprocess.STDOUT), log)
        for version, (proc, log) in procs.items():
            (outdir / f"{version}.rc").write_text(f"{proc.wait(timeout=900)}\n")
            log.close()
    results = {}
    for version in PYTHONS:
        returncode = int((outdir / f"{version}.rc").read_text())
        report_path = outdir / f"{version}.json"
        report = json.loads(report_path.read_text()) if returncode == 0 and report_path.is_file() else None
        log = (outdir / f"{version}.log").read_text() if (outdir / f"{version}.log").is_file() else ""
        results[version] = (returncode, report, "\n".join(line for line in log.splitlines() if "is ignored" not in line)[-3000:])
    return results


def _versions(report: dict) -> dict[str, str]:
    return {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"].split("+")[0] for item in report["install"]}


@pytest.mark.slow
@pytest.mark.parametrize("python_version", PYTHONS)
def test_requirements_resolve(resolutions, python_version):
    returncode, report, log = resolutions[python_version]
    assert returncode == 0 and report is not None, (
        f"pip cannot resolve requirements.txt for Python {python_version} (exit {returncode}):\n{log}"
    )
    versions = _versions(report)
    assert not UNWANTED & set(versions), f"Python {python_version} would install {sorted(UNWANTED & set(versions))}"
    for name in ("torch", "mediapipe", "gradio", "scikit-image", "numpy"):
        assert name in versions, f"{name} is missing from the Python {python_version} resolution"


@pytest.mark.slow
def test_the_space_runs_the_tested_versions(resolutions):
    reports = {v: resolutions[v][1] for v in PYTHONS}
    if any(report is None for report in reports.values()):
        pytest.skip("a resolution failed (test_requirements_resolve says why)")
    space, local = (_versions(reports[v]) for v in PYTHONS)
    differ = {name: (space.get(name), local.get(name)) for name in SAME_ON_BOTH if space.get(name) != local.get(name)}
    assert not differ, f"Python 3.10 and 3.11 resolve different versions (3.10, 3.11): {differ}"


# --- the Space's Python can import the code ---------------------------------------------------

_CHECKER = r'''
import ast, importlib, importlib.util, json, sys

GUARDS = {"ImportError", "ModuleNotFoundError", "AttributeError", "Exception"}
NEW_BUILTINS = {"ExceptionGroup", "BaseExceptionGroup"}
problems = []


def has(module_name, attr):
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    if hasattr(module, attr):
        return True
    try:
        importlib.import_module(module_name + "." + attr)
        return True
    except ImportError:
        return False


class Checker(ast.NodeVisitor):
    def __init__(self, path):
        self.path, self.guarded, self.modules = path, 0, {}

    def problem(self, node, what):
        if not self.guarded:
            problems.append([self.path, node.lineno, what])

    def visit_Try(self, node):
        names = set()
        for handler in node.handlers:
            for n in (ast.walk(handler.type) if handler.type is not None else [ast.Name(id="Exception")]):
                if isinstance(n, ast.Name):
                    names.add(n.id)
                elif isinstance(n, ast.Attribute):
                    names.add(n.attr)
        if names & GUARDS:
            self.guarded += 1
            for child in node.body:
                self.visit(child)
            self.guarded -= 1
            for child in node.handlers + node.orelse + node.finalbody:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_If(self, node):
        test = ast.unparse(node.test)
        if "version_info" in test or "TYPE_CHECKING" in test:
            self.guarded += 1
            self.generic_visit(node)
            self.guarded -= 1
        else:
            self.generic_visit(node)

    def visit_Import(self, node):
        for alias in node.names:
            top = alias.name.split(".")[0]
            if top in NEWER_STDLIB:
                self.problem(node, alias.name)
            elif top in sys.stdlib_module_names:
                if importlib.util.find_spec(alias.name) is None:
                    self.problem(node, alias.name)
                elif not self.guarded:
                    self.modules[alias.asname or top] = alias.name if alias.asname else top

    def visit_ImportFrom(self, node):
        if node.level or not node.module or node.module == "__future__":
            return
        if node.module.split(".")[0] in NEWER_STDLIB:
            self.problem(node, node.module)
            return
        if node.module.split(".")[0] not in sys.stdlib_module_names:
            return
        for alias in node.names:
            if alias.name != "*" and not has(node.module, alias.name):
                self.problem(node, node.module + "." + alias.name)

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and node.value.id in self.modules:
            module = self.modules[node.value.id]
            if not has(module, node.attr):
                self.problem(node, module + "." + node.attr)
        self.generic_visit(node)

    def visit_Name(self, node):
        if node.id in NEW_BUILTINS and isinstance(node.ctx, ast.Load):
            self.problem(node, node.id)


job = json.load(sys.stdin)
NEWER_STDLIB = set(job["host_stdlib"]) - set(sys.stdlib_module_names)  # e.g. tomllib (3.11)
for path in job["files"]:
    source = open(path, encoding="utf-8").read()
    try:
        compile(source, path, "exec")
    except SyntaxError as exc:
        problems.append([path, exc.lineno or 0, "syntax: " + str(exc.msg)])
        continue
    Checker(path).visit(ast.parse(source))
print(json.dumps(problems))
'''


def _python310() -> str | None:
    if sys.version_info[:2] == (3, 10):
        return sys.executable
    roots = [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")]
    candidates = [shutil.which("python3.10")]
    for root in filter(None, roots):
        candidates += sorted(glob(os.path.join(root, "versions", "3.10*", "bin", "python3.10")), reverse=True)
    candidates += ["/usr/bin/python3.10", "/usr/local/bin/python3.10"]
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
                                 capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.stdout.strip() == "True":
            return candidate
    return None


def test_the_space_python_can_import_every_module():
    python = _python310()
    if python is None:
        pytest.skip("no Python 3.10 interpreter here (pyenv install 3.10, or Debian's python3.10) to check the Space's code with")
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "demo").rglob("*.py")) + ["app.py"]
    out = subprocess.run([python, "-c", _CHECKER], input=json.dumps({"files": files, "host_stdlib": sorted(sys.stdlib_module_names)}), capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    problems = json.loads(out.stdout)
    found = {(path, what) for path, _, what in problems}
    listing = "\n".join(f"  {path}:{line}: {what}" for path, line, what in problems)
    assert not found, f"Python 3.10 (the ZeroGPU Space) cannot run these (3.11+ only):\n{listing}"
