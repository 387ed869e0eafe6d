"""No function of the package takes more than 8 parameters: records travel whole.

Read with ``ast`` (nothing is imported); ``self`` and ``cls`` do not count, ``*args`` and
``**kwargs`` count one each.
"""
from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'sve_jax'
MAX_PARAMETERS = 8


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[str]:
  args = node.args
  names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
  names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
  return [name for name in names if name not in ('self', 'cls')]


def long_signatures(source: str, where: str = '<source>') -> list[str]:
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      names = parameters(node)
      if len(names) > MAX_PARAMETERS:
        found.append(f'{where}:{node.lineno}: {getattr(node, "name", "lambda")} takes '
                     f'{len(names)} parameters ({", ".join(names)})')
  return found


def test_no_function_takes_more_than_8_parameters():
  found = []
  for path in sorted(PACKAGE.rglob('*.py')):
    found += long_signatures(path.read_text(), str(path.relative_to(PACKAGE.parent)))
  assert not found, 'pass a record instead:\n' + '\n'.join(found)


def test_the_count_skips_self_and_counts_star_args():
  source = ('class A:\n'
            '  def m(self, a, b, c, d, e, f, g, h): ...\n'
            'def f(a, b, c, d, e, f, g, *args, **kwargs): ...\n')
  (bad,) = long_signatures(source)
  assert ':3: f takes 9 parameters' in bad
