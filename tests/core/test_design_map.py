"""docs/DESIGN.md's module map names every module of the package, so a newcomer's map is whole."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "segment_worker"


def _modules() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name in {"__init__.py", "__main__.py"}:
            continue
        found.add(path.relative_to(PACKAGE).with_suffix("").as_posix())
    return found


def _mapped() -> set[str]:
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    section = text.split("## Modules (`src/segment_worker/`)", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return {m for line in rows for m in re.findall(r"`([a-z_]+(?:/[a-z_]+)?)`", line)}


def test_every_module_is_in_the_design_map() -> None:
    missing = sorted(_modules() - _mapped())
    assert not missing, f"docs/DESIGN.md's module map misses {missing}"


def test_the_map_names_no_module_that_is_gone() -> None:
    modules = _modules()
    packages = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*") if p.is_dir()}
    # Names in the map that look like module paths (a package/module, or a top-level module).
    stale = sorted(m for m in _mapped() if "/" in m and m not in modules and m.rstrip("/") not in packages
                   and not m.startswith("migrations"))
    assert not stale, f"docs/DESIGN.md's module map names modules that do not exist: {stale}"
