"""File fingerprints (`sve_jax.data.fingerprint`): fixed by path, size and modification time."""
import hashlib
import os

from sve_jax.data.fingerprint import fingerprint


def test_fingerprint_hashes_path_size_and_mtime(tmp_path):
  path = tmp_path / 'a.csv'
  path.write_text('text,label\n')
  os.utime(path, ns=(1, 2_000_000_000))
  expected = hashlib.sha256(f'{path}\0{11}\0{2_000_000_000}\n'.encode()).hexdigest()[:12]
  assert fingerprint([path]) == expected


def test_fingerprint_changes_with_the_files_only(tmp_path):
  a, b = tmp_path / 'a', tmp_path / 'b'
  a.write_text('one')
  b.write_text('two')
  first = fingerprint([a, b])
  assert fingerprint([str(a), str(b)]) == first  # str or Path
  assert fingerprint([b, a]) != first
  stat = os.stat(a)
  os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # touched
  assert fingerprint([a, b]) != first
  os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert fingerprint([a, b]) == first
  a.write_text('three')  # edited
  os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert fingerprint([a, b]) != first
