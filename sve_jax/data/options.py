"""The options of the local tfds builders, declared once as the fields of a config dataclass.

A builder with options names its config dataclass `OPTIONS_CLASS` (a subclass of
`tfds.core.BuilderConfig`) and may restrict it to `OPTIONS`. `builder_options` reads the
option names and types from it, which drives the command line (`configs/common.py`) and the
checks (`check_options`). `named_config` names a config by a hash of its values, so prepared
data are stored per distinct set of options.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds

_BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(tfds.core.BuilderConfig))
# Config fields `make_config` computes; never options.
DERIVED_FIELDS = frozenset({'fingerprint'})


def config_values(config: tfds.core.BuilderConfig) -> dict[str, Any]:
  """The fields a config subclass adds to `tfds.core.BuilderConfig`."""
  return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
          if f.name not in _BASE_FIELDS}


def builder_options(builder_cls: type) -> dict[str, type]:
  """`{option: type}` of every option `builder_cls.make_config` accepts.

  One declaration drives the command line and the checks: the fields of the
  builder's `OPTIONS_CLASS` config dataclass, less those `make_config` sets
  itself (`DERIVED_FIELDS`), restricted to its `OPTIONS` where it has them. A
  type is the field's annotation without `None` and without type arguments
  (`str | None` -> `str`, `tuple[tuple[str, float], ...]` -> `tuple`).
  Builders without `OPTIONS_CLASS` take no options: `{}`.
  """
  config_cls = getattr(builder_cls, 'OPTIONS_CLASS', None)
  if config_cls is None:
    return {}
  fields = {f.name: f for f in dataclasses.fields(config_cls)
            if f.name not in _BASE_FIELDS and f.name not in DERIVED_FIELDS}
  names = getattr(builder_cls, 'OPTIONS', None) or list(fields)
  return {name: _plain_type(fields[name].type, config_cls) for name in names}


def _plain_type(hint, owner: type) -> type:
  """`hint` (a field annotation of class `owner`) without `None` and type arguments."""
  if isinstance(hint, str):
    # String annotations (`from __future__ import annotations`) resolve in the owner's module,
    # as `typing.get_type_hints` would; it cannot be used on tfds's base class.
    hint = eval(hint, vars(sys.modules[owner.__module__]))  # pylint: disable=eval-used
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
    hint = args[0]
  return typing.get_origin(hint) or hint


def check_option_names(name: str, accepted: Iterable[str], values: Iterable[str],
                       key: str = 'option(s)') -> None:
  """Raises ValueError naming each of `values` not in `accepted`, and listing `accepted`.

  Args:
    name: the data set, for the message.
    accepted: the option names it accepts (`builder_options`).
    values: the option names given.
    key: what the caller calls the options, e.g. `config.data.options`.
  """
  unknown = sorted(set(values) - set(accepted))
  if unknown:
    raise ValueError(f'{name}: unknown {key} {unknown}; {name} accepts '
                     f'{sorted(accepted) or "no options"}.')


def named_config(config: tfds.core.BuilderConfig,
                 default: tfds.core.BuilderConfig | None = None) -> tfds.core.BuilderConfig:
  """`default` itself if `config` has its values, else `config` named by a hash.

  tfds refuses a custom config that shares a name with a predefined one, and
  prepared data are stored under the config name: equal values must give the
  same name, different values a different one.
  """
  values = config_values(config)
  if default is not None and values == config_values(default):
    return default
  digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=list).encode())
  return dataclasses.replace(config, name=digest.hexdigest()[:12],
                             description=json.dumps(values, default=list))


def default_with(builder_cls: type, values: Mapping[str, Any],
                 tuple_keys: Sequence[str] = ()) -> tfds.core.BuilderConfig:
  """`builder_cls`'s default config with `values` overridden, after checking their names.

  Lists and dicts among `values[tuple_keys]` become tuples (configs must stay hashable).
  """
  check_option_names(builder_cls.name, builder_options(builder_cls), values)
  default = builder_cls.BUILDER_CONFIGS[0]
  return named_config(dataclasses.replace(default, **tupled(values, tuple_keys)), default)


def tupled(values: dict, keys: Sequence[str]) -> dict:
  """Converts dicts and lists among `values[keys]` into (nested) tuples."""
  out = dict(values)
  for key in keys:
    value = out.get(key)
    if isinstance(value, Mapping):
      out[key] = tuple((str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
      out[key] = tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in value)
  return out
