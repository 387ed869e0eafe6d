"""Multiple choice: the prompt text, label letters, the class mask, bad examples; and ARC-Easy
as the tfds catalog builder prepares it (tests/arc_files.py)."""
import numpy as np
import pytest

from arc_files import NAME, prepare, question, stand_in_rows
from sve_jax.data import datasets
from sve_jax.data import multiple_choice as mc
from sve_jax.train import user_errors

SPLITS = {'train': 'train', 'validation': 'validation', 'test': 'test'}


def _example(choices, labels, answer, qid=b'Mercury_7'):
  """An example as tfds reads ARC: text as bytes."""
  return {'id': qid, 'question': b'Which gas do plants take in?', 'answerKey': answer,
          'choices': {'text': [c.encode() for c in choices], 'label': labels}}


def test_format_question_letters_the_choices_by_position():
  assert mc.format_question('Why?', ['sun', 'rain', 'wind']) == (
      'Question: Why?\nA. sun\nB. rain\nC. wind')


@pytest.mark.parametrize('label,letter', [
    ('C', 'C'), ('c', 'C'), (b'3', 'C'), ('1', 'A'), (np.int64(2), 'C'), (4, 'E')])
def test_to_letter(label, letter):
  assert mc.to_letter(label, 'ABCDE') == letter


@pytest.mark.parametrize('label', ['AB', '0', 'é', 7])
def test_to_letter_refuses_what_is_no_letter(label):
  with pytest.raises(ValueError, match='letter|class names'):
    mc.to_letter(label, 'ABCDE')


def test_numeric_labels_read_as_letters_and_three_choices_mask_d_and_e():
  out = mc.encode_example(_example(['oxygen', 'carbon dioxide', 'helium'], [b'1', b'2', b'3'],
                                   b'2'), num_classes=5)
  assert out['text'] == ('Question: Which gas do plants take in?\nA. oxygen\n'
                         'B. carbon dioxide\nC. helium')
  assert out['label'] == 1 and out['id'] == 'Mercury_7'
  np.testing.assert_array_equal(out['class_mask'], [True, True, True, False, False])


def test_classlabel_indices_and_five_choices():
  out = mc.encode_example(_example(list('vwxyz'), np.arange(5), np.int64(4)), 5, 'ABCDE')
  assert out['label'] == 4 and out['text'].endswith('\nE. z')
  assert out['class_mask'].all()


def test_the_answer_is_the_position_of_its_label():
  # Labels out of the usual order still letter the choices by position.
  out = mc.encode_example(_example(['p', 'q', 'r'], [b'A', b'B', b'D'], b'D'), 5)
  assert out['label'] == 2 and out['text'].endswith('\nC. r')


@pytest.mark.parametrize('choices,labels,answer,message', [
    (['p', 'q', 'r'], [b'A', b'B', b'C'], b'D', r"answer 'D' is not among its choice labels"),
    (list('pqrstu'), list('ABCDEF'), b'A', r'6 choices, more than the 5 classes'),
    (['p', 'q'], [b'A', b'A'], b'A', r'repeat'),
])
def test_bad_examples_name_the_example(choices, labels, answer, message):
  with pytest.raises(ValueError, match=r"multiple-choice example 'Mercury_7': .*" + message):
    mc.encode_example(_example(choices, labels, answer), num_classes=5)


@pytest.fixture(scope='module')
def arc_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('arc'))
  prepare(data_dir, {s: stand_in_rows(s, 8) for s in SPLITS})
  return data_dir


def test_arc_easy_reads_as_five_answer_letters(arc_dir):
  dataset = datasets.get_dataset({'name': NAME, 'splits': SPLITS}, arc_dir)
  assert dataset.label_names == ('A', 'B', 'C', 'D', 'E') and dataset.num_classes == 5
  assert (dataset.input_key, dataset.label_key) == ('text', 'label')
  by_id = {e['id']: e for e in (dataset.splits['test'][i] for i in range(8))}
  # test-4: 3 choices; test-2: labelled 1-4, answer '3'; test-6: 5 choices, answer 'B'.
  assert by_id['test-4']['class_mask'].tolist() == [True] * 3 + [False] * 2
  assert by_id['test-2']['label'] == 2 and '\nD. choice 3 of test 2' in by_id['test-2']['text']
  assert by_id['test-6']['label'] == 1 and by_id['test-6']['class_mask'].all()


def test_a_bad_answer_stops_get_dataset_with_one_line_naming_the_question(tmp_path):
  rows = {s: stand_in_rows(s, 2) for s in SPLITS}
  rows['validation'].append(question('Mercury_7', 'Which?', ['p', 'q', 'r'], 'D'))
  prepare(str(tmp_path), rows)
  with pytest.raises(ValueError) as error:
    datasets.get_dataset({'name': NAME, 'splits': SPLITS}, str(tmp_path))
  assert user_errors.user_error_message(error.value) == (
      "ai2_arc/ARC-Easy split 'validation': multiple-choice example 'Mercury_7': its answer "
      "'D' is not among its choice labels ['A', 'B', 'C']")
