"""Builder options (`sve_jax.data.options`): declared once as config fields, read back with
their types, checked by name, and parsed from the command line; a misspelt one is named."""
import dataclasses
import os

import pytest

import train
from sve_jax import data
from sve_jax.data import builders
from sve_jax.data import datasets
from sve_jax.data import options

from conftest import ROOT, parse_config
DEFAULT = os.path.join(ROOT, 'configs', 'default.py')
# A command-line value for each option type, and what it parses to.
SAMPLES = {str: ('/data/x', '/data/x'), int: ('7', 7), float: ('0.5', 0.5),
           bool: ('true', True),
           tuple: ("(('train', 0.5), ('test', 0.5))", (('train', 0.5), ('test', 0.5)))}


def parse(*overrides):
  """The locked config `train.py --config=configs/default.py <overrides>` gets."""
  return parse_config('configs/default.py', *overrides)


# ---------------------------------------------------------------- declared once


def test_builder_options_are_the_config_fields_with_plain_types():
  assert options.builder_options(builders.CsvText) == {
      'file': str, 'split_files': tuple, 'text_column': str, 'label_column': str,
      'label_names': tuple, 'encoding': str, 'split_fractions': tuple, 'split_seed': int,
      'agreement_column': str}  # `fingerprint` is derived, never an option
  assert options.builder_options(builders.TweetSentiment) == {
      'split_fractions': tuple, 'split_seed': int}  # restricted by its OPTIONS
  assert options.builder_options(builders.DigitsOod) == {}  # no OPTIONS_CLASS
  for builder_cls in builders.LOCAL_BUILDERS.values():
    config_cls = getattr(builder_cls, 'OPTIONS_CLASS', None)
    fields = {f.name for f in dataclasses.fields(config_cls)} if config_cls else set()
    assert set(options.builder_options(builder_cls)) <= fields


def test_check_option_names_lists_what_is_accepted():
  options.check_option_names('x', ['a', 'b'], ['b'])
  with pytest.raises(ValueError, match=r"x: unknown option\(s\) \['c', 'd'\]; x accepts "
                                       r"\['a', 'b'\]"):
    options.check_option_names('x', ['b', 'a'], ['d', 'a', 'c'])
  with pytest.raises(ValueError, match=r"y: unknown opts \['a'\]; y accepts no options"):
    options.check_option_names('y', [], ['a'], key='opts')


def test_named_config_names_equal_values_alike():
  default = builders.OodText.BUILDER_CONFIGS[0]
  assert options.named_config(dataclasses.replace(default), default) is default
  fewer = options.named_config(dataclasses.replace(default, max_sentences=5), default)
  again = options.named_config(dataclasses.replace(default, max_sentences=5), default)
  other = options.named_config(dataclasses.replace(default, max_sentences=6), default)
  assert fewer.name == again.name != other.name != default.name
  assert len(fewer.name) == 12


def test_tupled_makes_lists_and_dicts_hashable():
  values = {'a': [['x', 1], ['y', 2]], 'b': {'train': 0.5}, 'c': [1, 2], 'd': [3]}
  assert options.tupled(values, ('a', 'b', 'c')) == {
      'a': (('x', 1), ('y', 2)), 'b': (('train', 0.5),), 'c': (1, 2), 'd': [3]}


def test_default_with_overrides_a_predefined_config():
  config = options.default_with(builders.OodText, {'modules': ['os', 're']}, ('modules',))
  assert config.modules == ('os', 're') and config.min_words == 6
  with pytest.raises(ValueError, match=r"ood_text: unknown option\(s\) \['colour'\]"):
    options.default_with(builders.OodText, {'colour': 'red'})


def test_an_unknown_option_stops_get_dataset(tmp_path):
  with pytest.raises(ValueError, match="unknown option.*'colour'"):
    data.get_dataset({'name': 'tweet_sentiment', 'colour': 'red'}, str(tmp_path / 'tfds'))


# ---------------------------------------------------------------- on the command line


@pytest.mark.parametrize('section', ['data', 'ood'])
def test_every_option_of_every_builder_parses_from_the_command_line(section):
  for name, builder_cls in builders.LOCAL_BUILDERS.items():
    for option, kind in options.builder_options(builder_cls).items():
      text, value = SAMPLES[kind]
      config = parse(f'--config.{section}.options.{option}={text}')
      assert config[section].options[option] == value, (name, option)


def test_readme_csv_overrides_reach_the_builder_and_unset_options_stay_unset():
  config = parse('--config.data.name=csv_text', '--config.data.options.file=/data/reviews.csv',
                 '--config.data.options.text_column=review',
                 '--config.data.options.label_column=stars')
  given = {k: v for k, v in config.data.options.items() if v is not None}
  assert given == {'file': '/data/reviews.csv', 'text_column': 'review',
                   'label_column': 'stars'}
  datasets.check_options('csv_text', config.data.options)  # accepted: no error


def test_misspelt_option_fails_at_parsing_naming_it_and_the_accepted_ones():
  with pytest.raises(AttributeError) as error:
    parse('--config.data.options.text_colum=review')
  message = str(error.value)
  assert "'text_colum' is not an option of any data builder" in message
  for name, builder_cls in builders.LOCAL_BUILDERS.items():
    accepted = sorted(options.builder_options(builder_cls))
    assert f'{name}: {accepted or "none"}' in message.replace('\\', '')


@pytest.mark.parametrize('name,values,message', [
    ('tweet_sentiment', {'file': '/data/reviews.csv'},
     r"tweet_sentiment: unknown config.data.options \['file'\]; tweet_sentiment accepts "
     r"\['split_fractions', 'split_seed'\]"),
    ('csv_text', {'folder': '/data/photos', 'file': '/data/x.csv'},
     r"csv_text: unknown config.data.options \['folder'\]; csv_text accepts \[.*'file'"),
    ('cifar100', {'split_seed': 3},
     r"cifar100: unknown config.data.options \['split_seed'\]; cifar100 accepts no options"),
])
def test_option_the_chosen_builder_does_not_take_fails_before_data_is_read(
    name, values, message, tmp_path):
  config = parse(f'--config.data.name={name}',
                 *(f'--config.data.options.{k}={v}' for k, v in values.items()))
  config.data.data_dir = str(tmp_path / 'data')
  with pytest.raises(ValueError, match=message):
    train.run(config, str(tmp_path / 'w'), 'train')
  assert not os.path.exists(tmp_path / 'data')  # nothing was read or prepared
