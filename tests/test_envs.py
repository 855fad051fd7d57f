"""The conda environments agree with requirements.txt, offline: every pinned package appears in each env file with the
same version, and no env reaches for the `pytorch`/`nvidia` channels or `pytorch-cuda` (the `pytorch` channel stops at
PyTorch 2.5). Creating the envs is not tested: conda channels are unreachable from the project's machines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
ENVS = [ROOT / "environment.yml", ROOT / "workflow/envs/amed.yaml"]
CONDA_NAME = {"torch": "pytorch"}  # pip name -> conda-forge name where they differ (after canonicalisation)
CHANNELS = {"conda-forge", "nodefaults"}


def requirements() -> list[Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [Requirement(s) for s in (line.split("#", 1)[0].strip() for line in lines) if s]


def conda_spec(spec: str) -> tuple[str, str]:
    """A conda match spec as (canonical name, version constraint): 'numpy=2.4.6' -> ('numpy', '==2.4.6'),
    'pytorch=2.13.0=cuda*' -> ('pytorch', '==2.13.0'), 'setuptools<81' -> ('setuptools', '<81')."""
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", spec.strip())
    name, rest = m[1], m[2].replace(" ", "")
    if rest.startswith("==") or (rest.startswith("=") and not rest.startswith("==")):
        rest = "==" + rest.lstrip("=").split("=", 1)[0]  # drop a build string
    return canonicalize_name(name), rest


def env_packages(path: Path) -> dict[tuple[str, tuple[str, ...]], str]:
    """{(canonical conda-side name, extras): version constraint} of the conda and pip sections of an env file."""
    env = yaml.safe_load(path.read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                if line.startswith("-"):  # -e . / -e ../..
                    continue
                r = Requirement(line)
                name = canonicalize_name(r.name)
                out[(CONDA_NAME.get(name, name), tuple(sorted(r.extras)))] = str(r.specifier)
        else:
            name, constraint = conda_spec(dep)
            out[(name, ())] = constraint
    return out


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_pins_what_requirements_pin(path):
    got = env_packages(path)
    for r in requirements():
        name = canonicalize_name(r.name)
        key = (CONDA_NAME.get(name, name), tuple(sorted(r.extras)))
        assert key in got, f"{path.name}: {r} is missing (looked for {key[0]}{list(key[1]) or ''})"
        assert got[key] == str(r.specifier), f"{path.name}: {key[0]} {got[key]!r}, requirements.txt {r}"


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_uses_conda_forge_only(path):
    env = yaml.safe_load(path.read_text())
    assert set(env["channels"]) <= CHANNELS, env["channels"]
    names = {conda_spec(d)[0] for d in env["dependencies"] if isinstance(d, str)}
    assert "pytorch-cuda" not in names and not any("::" in d for d in env["dependencies"] if isinstance(d, str))
    assert names >= {"python", "pip"}


def test_rule_env_has_what_the_rules_import():
    """The rules' env (`--sdm conda`) holds FID (clean-fid, scipy, pillow) and Stable Diffusion (diffusers,
    transformers) besides the core stack, and installs the project itself."""
    got = {name for name, _ in env_packages(ENVS[1])}
    assert got >= {"pytorch", "clean-fid", "scipy", "pillow", "diffusers", "transformers", "pyyaml", "jsonschema",
                   "safetensors", "pandas", "matplotlib", "numpy", "scikit-learn", "triton"}
    pip = next(d["pip"] for d in yaml.safe_load(ENVS[1].read_text())["dependencies"] if isinstance(d, dict))
    assert "-e ../.." in pip  # workflow/envs/ -> the repository root


def test_the_parsers():
    assert conda_spec("pytorch=2.13.0=cuda*") == ("pytorch", "==2.13.0")
    assert conda_spec("numpy==2.4.6") == ("numpy", "==2.4.6")
    assert conda_spec("setuptools<81") == ("setuptools", "<81")
    assert conda_spec("PyYAML=6.0.4") == ("pyyaml", "==6.0.4")
    assert {str(r) for r in requirements()} >= {"torch==2.13.0", "snakemake[reports]==9.27.1", "setuptools<81"}
