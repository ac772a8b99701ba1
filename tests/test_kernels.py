"""The quality tests again, as a CPU with other kernels computes them (#25).

int8 tiny.en says different things on different CPUs: a Xeon with AVX-512 VNNI heard six
"Hello." where the machine the bounds were set on heard three.  CTranslate2 and MKL can be forced
to a lower instruction set (``whispersg.kernels``), so each kernel set this CPU can run re-runs
every ``quality`` test in a process of its own.  The bounds beside those tests hold on each.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from whispersg.kernels import kernel_environment, supported_kernels

from .conftest import REPO

KERNELS = ("AVX2", "AVX512")


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
def test_quality_holds_on_another_cpus_kernels(kernel):
    if os.environ.get("CT2_FORCE_CPU_ISA"):
        pytest.skip("this run already forces a kernel set (it is one of these runs)")
    if kernel not in supported_kernels():
        pytest.skip(f"this CPU cannot run {kernel} kernels")
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "quality", "-q", "-p", "no:cacheprovider",
                           "--durations=5", str(REPO / "tests")],
                          cwd=REPO, env=kernel_environment(kernel), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"quality tests under {kernel} kernels:\n{done.stdout[-8000:]}{done.stderr[-2000:]}"
    assert " passed" in done.stdout.splitlines()[-1], done.stdout[-2000:]
