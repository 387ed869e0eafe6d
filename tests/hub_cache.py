"""A Hugging Face hub cache built from local files, for offline tests of weights by name."""
import hashlib
import os


def add_repo(cache, repo, folder):
  """Puts ``folder``'s files into the hub cache ``cache`` (a pathlib.Path) as ``repo``.

  The layout is the one ``huggingface_hub`` writes when it downloads a repo:
  ``models--<org>--<name>/snapshots/<commit>/<files>`` (here links to the files, as the
  hub's are links to its blobs) and ``refs/main`` holding the commit.
  """
  commit = hashlib.sha1(repo.encode()).hexdigest()
  root = cache / ('models--' + repo.replace('/', '--'))
  snapshot = root / 'snapshots' / commit
  for parent, _, files in os.walk(folder):
    for name in files:
      source = os.path.join(parent, name)
      target = snapshot / os.path.relpath(source, folder)
      target.parent.mkdir(parents=True, exist_ok=True)
      target.symlink_to(source)
  (root / 'refs').mkdir(parents=True)
  (root / 'refs' / 'main').write_text(commit)
