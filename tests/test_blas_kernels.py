"""The golden cases hold under every OpenBLAS kernel this machine can run.

OpenBLAS picks a GEMM kernel for the CPU, and ``OPENBLAS_CORETYPE`` forces another (common on shared and
virtual machines).  Kernels round differently in the last bits, so nothing that the validation suite stores
or requires may depend on them: the expected numbers are 50-digit references, the inputs are built without
BLAS, and the checker's tolerances come from conditioning.  This test proves it here: for each kernel that
runs on this CPU (a forced kernel the CPU lacks dies with an illegal instruction and is skipped), at one
thread and at OpenBLAS's default, a fresh process regenerates every case's inputs (``generate --check``:
they must hash to the committed ones, and the CNF's ODE solves must agree at their certified digits) and
checks npflows against every case.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = [None, "Haswell", "Zen", "SandyBridge", "SkylakeX", "Cooperlake", "SapphireRapids", "Nehalem"]
PROBE = ("import numpy as np, threadpoolctl; a = np.ones((64, 64)); a @ a; "
         "print(threadpoolctl.threadpool_info()[0].get('architecture'))")
WORK = ("import sys; from validation import generate, check, format as F; "
        "from validation.adapters import npflows_adapter; "
        "bad = generate.check_committed(sorted(generate.load_registry())); "
        "res = check.check(npflows_adapter, F.load_cases(), out=lambda s: None); "
        "bad += [f'{r.name}: {r.status} {r.first}' for r in res if r.status != 'pass']; "
        "print('\\n'.join(bad) or 'ok'); sys.exit(1 if bad else 0)")


def _env(kernel, threads):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    if kernel:
        env["OPENBLAS_CORETYPE"] = kernel
    if threads:
        env["OPENBLAS_NUM_THREADS"] = str(threads)
    return env


def _kernels():
    """``{architecture: OPENBLAS_CORETYPE value}`` for every candidate that runs here, one per kernel."""
    pytest.importorskip("threadpoolctl")
    found = {}
    for k in CANDIDATES:
        p = subprocess.run([sys.executable, "-c", PROBE], env=_env(k, None), capture_output=True, text=True,
                           timeout=60)
        arch = p.stdout.strip() if p.returncode == 0 else None
        if arch and arch not in found:
            found[arch] = k
    return found


def test_validation_cases_hold_under_every_blas_kernel_and_thread_count():
    kernels = _kernels()
    assert kernels, "no OpenBLAS kernel could be probed"
    failures = []
    for arch, k in kernels.items():
        for threads in (1, None):
            p = subprocess.run([sys.executable, "-c", WORK], cwd=ROOT, env=_env(k, threads),
                               capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                failures.append(f"kernel {arch} (OPENBLAS_CORETYPE={k}), threads {threads or 'default'}:\n"
                                f"{p.stdout[-1500:]}{p.stderr[-1500:]}")
    assert not failures, "\n".join(failures)
    print(f"kernels checked: {kernels}")
