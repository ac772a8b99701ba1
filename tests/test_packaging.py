"""Packaging facts users rely on: the core install stays torch-free and requirements.txt matches it."""

from __future__ import annotations

import tomllib

from .conftest import REPO


def test_requirements_txt_matches_core_dependencies():
    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [l.strip() for l in (REPO / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert sorted(listed) == sorted(core)


def test_core_install_has_no_torch_and_torch_extras_pin_the_cpu_wheel():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("torch") for d in project["dependencies"])
    for extra, requirements in project["optional-dependencies"].items():
        for requirement in requirements:
            if requirement.replace(" ", "").startswith("torch") and not requirement.startswith("torchcodec"):
                # finetune keeps a CUDA torch a GPU user installed first; the pinned extras keep `.[all]` on 2.13.0.
                expected = "torch>=2.13,<3" if extra == "finetune" else "torch==2.13.0"
                assert requirement == expected, (extra, requirement)
    assert {"whispersg", "whispersg_live"} <= set(project["scripts"])
    assert "whisperx" not in " ".join(project["optional-dependencies"]["all"])
