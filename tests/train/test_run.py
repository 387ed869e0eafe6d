"""The run's cheap stages: the workdir, the mesh checks and the shift plan, before any heavy
work."""
import ml_collections
import pytest

from sve_jax import export
from sve_jax import models
from sve_jax.data import corruptions

from configs import default
from sve_jax.train import checkpoint as ckpt
from sve_jax.train import run
from sve_jax.train.predict import PredictError
from sve_jax.train.predict import PredictRequest


def test_open_workdir_gives_a_workdir_record_and_eval_mode_needs_a_best_checkpoint(tmp_path):
  config = default.get_config()
  workdir = run.open_workdir(config, str(tmp_path / 'w'), 'train', 4)
  assert workdir.path == str(tmp_path / 'w')
  assert workdir.identity == {'method': config.method, 'backbone': config.model.name,
                              'model_path': config.model.path,
                              'model_preset': config.model.preset, 'num_members': 4,
                              'adapted_blocks': -1}
  workdir.checkpointer.close()
  with pytest.raises(ckpt.CheckpointError, match='--mode=eval: no best checkpoint'):
    run.open_workdir(config, str(tmp_path / 'w'), 'eval', 4)


def test_predict_mode_needs_results_json_and_a_best_checkpoint_or_the_trainables_file(
    tmp_path):
  config = default.get_config()
  workdir = tmp_path / 'w'
  workdir.mkdir()
  (workdir / 'results.json').write_text('{}')
  with pytest.raises(ckpt.CheckpointError,
                     match=f'--mode=predict: {workdir} holds no finished run .*'
                           f'{export.TRAINABLES_FILENAME}'):
    run.open_workdir(config, str(workdir), 'predict', 4)
  (workdir / export.TRAINABLES_FILENAME).write_bytes(b'')  # read (and checked) later
  run.open_workdir(config, str(workdir), 'predict', 4).checkpointer.close()
  (workdir / 'results.json').unlink()
  with pytest.raises(ckpt.CheckpointError, match='holds no finished run'):
    run.open_workdir(config, str(workdir), 'predict', 4)


def test_the_mesh_reports_the_methods_members_and_refuses_a_batch_it_cannot_split():
  config = default.get_config()
  config.method, config.num_members = 'single_ft', 4
  _, members = run.join_processes_and_make_mesh(config)
  assert members == 1  # one fine-tuned model
  config.method = 'sve'
  assert run.join_processes_and_make_mesh(config)[1] == 4
  config.mesh.member = 3
  with pytest.raises(ValueError, match='config.mesh.member=3'):
    run.join_processes_and_make_mesh(config)


def _shift_config(**shift):
  return ml_collections.ConfigDict({'seed': 0, 'shift': {
      'enabled': True, 'corruptions': (), 'severities': (1, 2), 'max_examples': 3, **shift}})


def test_the_plan_caps_the_subset_and_defaults_to_the_modalitys_corruptions():
  source = [{'text': f'example {i}', 'label': 0} for i in range(10)]
  plan = run.plan_shift(_shift_config(), 'text', 'text', source)
  assert plan.corruptions == corruptions.DEFAULTS['text'] and len(plan.source) == 3
  assert plan.severities == (1, 2) and plan.input_key == 'text'
  assert len(run.plan_shift(_shift_config(max_examples=-1), 'text', 'text', source).source) == 10
  assert run.plan_shift(_shift_config(enabled=False), 'text', 'text', source) is None
  with pytest.raises(ValueError, match=r"^config.shift.corruptions: 'fog' is not a corruption "
                                       'of text data'):
    run.plan_shift(_shift_config(corruptions=('fog',)), 'text', 'text', source)


def _predict_before_the_model(monkeypatch, tmp_path, data_dir, name, content):
  """``run.run`` in predict mode on an input file ``name`` holding ``content``, with
  ``models.load_backbone`` (as run.py calls it) raising ``AssertionError('model loaded')``.

  The workdir only looks finished (results.json and an empty trainables file, as in
  :func:`test_predict_mode_needs_results_json_and_a_best_checkpoint_or_the_trainables_file`):
  neither is read before the model loads.
  """
  def load_backbone(*args, **kwargs):
    raise AssertionError('model loaded')

  monkeypatch.setattr(models, 'load_backbone', load_backbone)
  assert run.models.load_backbone is load_backbone  # the very name the run calls
  workdir = tmp_path / 'w'
  workdir.mkdir()
  (workdir / 'results.json').write_text('{}')
  (workdir / export.TRAINABLES_FILENAME).write_bytes(b'')
  source = tmp_path / name
  source.write_text(content)
  config = default.get_config()
  config.data.data_dir = data_dir
  run.run(config, str(workdir), 'predict',
          PredictRequest(str(source), str(tmp_path / 'out.csv')))


@pytest.mark.parametrize('name,content,message', [
    ('no_text.csv', 'tweet,label\nhello,positive\n', "no_text.csv:2: no column 'text'"),
    ('no_text.jsonl', '{"text": "fine"}\n{"tweet": "hello"}\n',
     "no_text.jsonl:2: no column 'text'"),
], ids=['csv', 'jsonl'])
def test_predict_refuses_a_bad_input_file_before_the_model_loads(
    name, content, message, monkeypatch, tmp_path, shared_data_dir):
  with pytest.raises(PredictError, match=message):
    _predict_before_the_model(monkeypatch, tmp_path, shared_data_dir, name, content)
  assert not (tmp_path / 'out.csv').exists()


def test_predict_with_a_good_input_file_goes_on_to_load_the_model(
    monkeypatch, tmp_path, shared_data_dir):
  # The mirror of the test above: the patched loader is reached, so there the input check is
  # what stopped the run, not an earlier failure.
  with pytest.raises(AssertionError, match='model loaded'):
    _predict_before_the_model(monkeypatch, tmp_path, shared_data_dir, 'new.csv',
                              'text\nhello\n')
