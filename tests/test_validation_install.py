"""The validation suite installs with npflows: after a non-editable install, the checker runs from any
directory, with the cases installed alongside it, and checks npflows against every case in under 60 s."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _can_build_here():
    """Can the installed setuptools build a wheel without a download (>= 70.1 has bdist_wheel built in;
    older ones need the wheel package, and pyproject metadata needs >= 61)?"""
    import importlib.util
    try:
        import setuptools
    except ImportError:
        return False
    v = tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit())
    return v >= (70, 1) or (v >= (61, 0) and importlib.util.find_spec("wheel") is not None)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """npflows and npflows_validation installed (built as a wheel, not editable) into a fresh folder."""
    target = tmp_path_factory.mktemp("site")
    isolation = ["--no-build-isolation"] if _can_build_here() else []   # else pip fetches setuptools
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation,
                        "--disable-pip-version-check", "--target", str(target), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        pytest.fail(f"pip install failed:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return target


def test_installed_checker_checks_npflows_against_every_case_from_another_directory(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    where = subprocess.run([sys.executable, "-c", "import npflows, npflows_validation as v; "
                            "print(npflows.__file__); print(v.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(installed)) for line in where.stdout.split()), where.stdout
    n_files = len(list((ROOT / "validation" / "cases").glob("*.json")))
    assert len(list((installed / "npflows_validation" / "cases").glob("*.json"))) == n_files
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "npflows_validation", "check", "npflows"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    dt = time.perf_counter() - t0
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = next(line for line in out.stdout.splitlines() if line.startswith("summary: npflows"))
    n = int(summary.split(": ")[2].split()[0])
    assert f"{n} cases, {n} pass" in summary, summary
    assert dt < 60.0, f"{dt:.1f} s"


def test_installed_checker_runs_an_adapter_file_written_against_the_repository(installed, tmp_path):
    """An adapter that imports ``validation.adapters`` (the repository's name) runs against the installed
    ``npflows_validation`` too."""
    adapter = tmp_path / "mine.py"
    adapter.write_text("from validation.adapters import arrays, Unavailable\n"
                       "from validation.adapters import npflows_adapter\n"
                       "NAME = 'mine'\nsupports = npflows_adapter.supports\nrun = npflows_adapter.run\n")
    env = {**os.environ, "PYTHONPATH": str(installed)}
    out = subprocess.run([sys.executable, "-m", "npflows_validation", "check", str(adapter), "--cases", "sigmoid"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "summary: mine" in out.stdout
