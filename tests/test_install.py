"""A real install: the wheel built from this project, in a fresh virtual environment, away from the
source tree, runs the example study through to the report with only what the wheel holds (its
configuration, frameworks and model registry are package data)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_wheel_runs_the_example_study_from_another_folder(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(wheels)], check=True, cwd=tmp_path)
    wheel = next(wheels.glob("themeshift-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet",
                    str(wheel)], check=True)
    # Its dependencies come from this environment, appended after the venv's own site-packages: the
    # project's editable install there is a .pth file, which a path added this way never runs.
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")

    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    where = subprocess.run([str(python), "-c", "import pipeline, pipeline.config as c; print(pipeline.__file__); "
                            "print(c.DEFAULT_CONFIG_PATH)"], check=True, capture_output=True, text=True, cwd=away,
                           env=env).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where  # the wheel's code and data, not the source

    run = away / "run"
    result = subprocess.run([str(venv / "bin" / "themeshift"), "run", str(REPO / "examples" / "kt_study"),
                             "--out", str(run), "--quiet"], cwd=away, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert Path(manifest["stages"]["map"]["framework"]["path"]).is_relative_to(site)
    assert manifest["stages"]["map"]["framework"]["name"]
    assert (run / "report.html").stat().st_size > 10_000
    assert manifest["stages"]["codes"]["counts"]["codes"] > 0

    shown = subprocess.run([str(venv / "bin" / "themeshift"), "stages"], cwd=away, env=env, capture_output=True,
                           text=True, check=True).stdout
    assert "themeshift map RUN" in shown
