"""The file formats cli.py hands to the package: sample shards, CSV tables, a reopened teacher cache."""

import numpy as np
import pytest

from amed._io import csv_bytes, write_csv, write_npy
from amed.cache import TeacherCache
from amed.errors import AmedValueError
from amed.samples import SampleShards, write_shard


def test_a_written_shard_reads_back(tmp_path):
    images = np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8, 1)
    write_shard(tmp_path / "000005.npz", images, [5, 6, 7], {"model": "digits-8", "path": tmp_path})
    with SampleShards([tmp_path / "000005.npz"], (8, 8, 1)) as shards:
        shards.check_seeds(3, [5, 6, 7])
        assert np.array_equal(np.concatenate(list(shards.read(3, chunk=2))), images)
    with np.load(tmp_path / "000005.npz") as z:
        assert z["seeds"].dtype == np.int64 and '"path": "' in str(z["meta"])  # non-JSON values as str


def test_csv_bytes_keeps_each_writers_line_ends(tmp_path):
    rows = [{"a": 1, "b": "x,y"}, {"a": 2, "b": 'q"'}]
    assert csv_bytes(rows) == b'a,b\n1,"x,y"\n2,"q"""\n'
    assert csv_bytes(rows, ["b", "a"], lineterminator="\r\n") == b'b,a\r\n"x,y",1\r\n"q""",2\r\n'
    assert write_csv(tmp_path / "t.csv", rows).read_bytes() == csv_bytes(rows)
    with pytest.raises(AmedValueError, match="no rows"):
        write_csv(tmp_path / "e.csv", [])
    write_npy(tmp_path / "f.npy", np.eye(2))
    assert np.array_equal(np.load(tmp_path / "f.npy"), np.eye(2))


def test_reopening_a_missing_teacher_cache_says_what_to_run(tmp_path):
    with pytest.raises(AmedValueError, match=r"no teacher cache at .* \(run `amed teacher` first\)"):
        TeacherCache.reopen(tmp_path / "none")
