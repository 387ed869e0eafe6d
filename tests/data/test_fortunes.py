"""The fortune-file reader: `strfile` entries, whitespace collapsed, filtered by length."""
import pytest

from sve_jax.data import fortunes


def test_read_fortune_file_splits_on_percent_lines(tmp_path):
  (tmp_path / 'cookies').write_text('One  short\tline here.\n%\nTwo\n  lines here.\n%\n%\n'
                                    'Last one, no trailing percent.\n')
  assert fortunes.read_fortune_file(tmp_path / 'cookies') == [
      'One short line here.', 'Two lines here.', 'Last one, no trailing percent.']


def test_fortune_texts_filters_by_words_and_deduplicates(tmp_path):
  (tmp_path / 'a').write_text('Too short.\n%\nJust long enough here.\n%\nOne two three four '
                              'five six.\n')
  (tmp_path / 'b').write_text('Just long enough here.\n%\nAnother fine entry.\n')
  assert fortunes.fortune_texts(str(tmp_path), ('a', 'b'), min_words=3, max_words=5) == [
      'Just long enough here.', 'Another fine entry.']


def test_a_missing_file_names_the_package(tmp_path):
  with pytest.raises(FileNotFoundError, match='fortunes-min'):
    fortunes.read_fortune_file(tmp_path / 'absent')
