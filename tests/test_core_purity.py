"""core/ is pure logic: no module under regime_assets/core imports matplotlib or dagster."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import regime_assets.core as core_pkg

CORE = pathlib.Path(core_pkg.__file__).parent
FORBIDDEN = ("matplotlib", "dagster", "dagster_duckdb", "regime_assets.rendering", "regime_assets.assets")


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def test_no_core_module_imports_presentation_or_dagster():
    files = sorted(CORE.rglob("*.py"))
    assert files
    bad = [f"{p.relative_to(CORE.parent)}:{line} imports {name}"
           for p in files for line, name in _imports(p)
           if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, "\n".join(bad)


def test_importing_every_core_module_loads_neither_matplotlib_nor_dagster():
    mods = [f"regime_assets.core.{'.'.join(p.relative_to(CORE).with_suffix('').parts)}"
            for p in sorted(CORE.rglob("*.py")) if p.name != "__init__.py"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in mods)
            + "bad = [m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'dagster')]\n"
            + "print(','.join(sorted(bad)[:5]))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "", res.stdout
