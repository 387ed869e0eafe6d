"""Builder options on the command line: every declared option parses, a misspelt one is named."""
import os

from absl import flags
from ml_collections import config_flags
import pytest

import train
from sve_jax.data import builders
from sve_jax.data import datasets

from conftest import ROOT
DEFAULT = os.path.join(ROOT, 'configs', 'default.py')
# A command-line value for each option type, and what it parses to.
SAMPLES = {str: ('/data/x', '/data/x'), int: ('7', 7), float: ('0.5', 0.5),
           bool: ('true', True),
           tuple: ("(('train', 0.5), ('test', 0.5))", (('train', 0.5), ('test', 0.5)))}


def parse(*overrides):
  """The locked config `train.py --config=configs/default.py <overrides>` gets."""
  argv = ['train.py', f'--config={DEFAULT}', *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config


@pytest.mark.parametrize('section', ['data', 'ood'])
def test_every_option_of_every_builder_parses_from_the_command_line(section):
  for name, builder_cls in builders.LOCAL_BUILDERS.items():
    for option, kind in builders.builder_options(builder_cls).items():
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
    accepted = sorted(builders.builder_options(builder_cls))
    assert f'{name}: {accepted or "none"}' in message.replace('\\', '')


@pytest.mark.parametrize('name,options,message', [
    ('tweet_sentiment', {'file': '/data/reviews.csv'},
     r"tweet_sentiment: unknown config.data.options \['file'\]; tweet_sentiment accepts "
     r"\['split_fractions', 'split_seed'\]"),
    ('csv_text', {'folder': '/data/photos', 'file': '/data/x.csv'},
     r"csv_text: unknown config.data.options \['folder'\]; csv_text accepts \[.*'file'"),
    ('cifar100', {'split_seed': 3},
     r"cifar100: unknown config.data.options \['split_seed'\]; cifar100 accepts no options"),
])
def test_option_the_chosen_builder_does_not_take_fails_before_data_is_read(
    name, options, message, tmp_path):
  config = parse(f'--config.data.name={name}',
                 *(f'--config.data.options.{k}={v}' for k, v in options.items()))
  config.data.data_dir = str(tmp_path / 'data')
  with pytest.raises(ValueError, match=message):
    train.run(config, str(tmp_path / 'w'), 'train')
  assert not os.path.exists(tmp_path / 'data')  # nothing was read or prepared
