"""The package's imports flow one way (the order README.md's architecture section states).

Every module of ``sve_jax`` is read with ``ast`` (nothing is imported) and each of its
``sve_jax`` imports, at any depth of the module (function-level imports included), is mapped to
its layer. A module may import its own layer's modules (a package's modules import each other)
and anything below; an import of a layer above, or of a different unit of the same rank
(``data`` and ``models`` never import each other), fails.
"""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'sve_jax'

#: ``(unit, rank)``, lowest first. A unit is a core module or a whole subpackage.
LAYERS = (
    ('sve_jax.tree', 0), ('sve_jax.image_stats', 0), ('sve_jax.choices', 0),
    ('sve_jax.class_mask', 0),
    ('sve_jax.layout', 1),
    ('sve_jax.factorize', 2),
    ('sve_jax.execution', 3),
    ('sve_jax.ensemble', 4),
    ('sve_jax', 5),  # the public API: sve_jax/__init__.py, over the core above
    ('sve_jax.models', 6), ('sve_jax.data', 6),
    ('sve_jax.methods', 7),
    ('sve_jax.eval', 8),
    ('sve_jax.export', 9),
    ('sve_jax.train', 10),
    ('sve_jax.tunix', 11),  # the `tunix` extra: adapters over tunix's models, on top of all
)
RANK = dict(LAYERS)


def unit_of(module: str) -> str:
  """The layer unit a dotted module name belongs to (the longest listed prefix)."""
  parts = module.split('.')
  for n in range(len(parts), 0, -1):
    prefix = '.'.join(parts[:n])
    if prefix in RANK:
      return prefix
  raise KeyError(f'{module} belongs to no layer of tests/test_layering.py: add it to LAYERS')


def _is_module(dotted: str) -> bool:
  path = PACKAGE.parent.joinpath(*dotted.split('.'))
  return path.with_suffix('.py').exists() or (path / '__init__.py').exists()


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
  """``(line, module)`` of every ``sve_jax`` module a source imports.

  ``from sve_jax.x import y`` names ``sve_jax.x.y`` when that is a module, else ``sve_jax.x``.
  """
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(node.lineno, a.name) for a in node.names if a.name.split('.')[0] == 'sve_jax']
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
        node.module.split('.')[0] == 'sve_jax'):
      for alias in node.names:
        sub = f'{node.module}.{alias.name}'
        found.append((node.lineno, sub if _is_module(sub) else node.module))
  return found


def upward_imports() -> list[str]:
  bad = []
  for path in sorted(PACKAGE.rglob('*.py')):
    source = module_name(path)
    src_unit = unit_of(source)
    for line, target in imported_modules(ast.parse(path.read_text(), str(path))):
      dst_unit = unit_of(target)
      if dst_unit != src_unit and RANK[dst_unit] >= RANK[src_unit]:
        bad.append(f'{path.relative_to(PACKAGE.parent)}:{line}: {source} ({src_unit}, layer '
                   f'{RANK[src_unit]}) imports {target} ({dst_unit}, layer {RANK[dst_unit]})')
  return bad


def test_every_import_points_down_the_layers():
  bad = upward_imports()
  assert not bad, 'imports against the layering:\n' + '\n'.join(bad)


def test_every_module_has_a_layer():
  for path in PACKAGE.rglob('*.py'):
    unit_of(module_name(path))


@pytest.mark.parametrize('source,expected', [
    ('from sve_jax.train import steps\n', ['sve_jax.train.steps']),
    ('from sve_jax.methods.base import Forward\n', ['sve_jax.methods.base']),
    ('import sve_jax.ensemble as e\n', ['sve_jax.ensemble']),
    ('from sve_jax import decompose\n', ['sve_jax']),
    ('def f():\n  from sve_jax import export\n', ['sve_jax.export']),
    ('from . import x\nimport jax\n', []),
])
def test_imports_are_resolved_to_modules(source, expected):
  assert [m for _, m in imported_modules(ast.parse(source))] == expected


def test_layer_ranks_order_the_packages():
  assert unit_of('sve_jax.train.loop') == 'sve_jax.train'
  assert RANK[unit_of('sve_jax.methods.base')] > RANK[unit_of('sve_jax.ensemble')]
  assert RANK[unit_of('sve_jax.models.vit')] == RANK[unit_of('sve_jax.data.pipeline')]


def test_import_sve_jax_needs_no_scipy():
  """The core (``import sve_jax``) stays light: scipy is only for :mod:`sve_jax.eval`."""
  code = ('import sys, sve_jax; bad = [m for m in ("scipy", "sve_jax.eval", "sve_jax.train") '
          'if m in sys.modules]; assert not bad, bad')
  subprocess.run([sys.executable, '-c', code], check=True, cwd=PACKAGE.parent, timeout=300)
