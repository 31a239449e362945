import hashlib
import os

import pytest

from mosic import MosicError
from mosic.files import check_output_place, file_sha256


def test_a_file_hash_is_the_sha256_of_its_bytes(tmp_path):
    data = os.urandom(3 << 20)
    (tmp_path / "w.bin").write_bytes(data)
    assert file_sha256(tmp_path / "w.bin") == hashlib.sha256(data).hexdigest()


def test_an_output_place_that_can_be_written_passes_and_leaves_nothing_behind(tmp_path):
    check_output_place(tmp_path / "not" / "yet" / "there", "--out")
    (tmp_path / "old.json").write_text("{}")
    check_output_place(tmp_path / "old.json", "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]


def test_an_output_place_that_cannot_be_written_is_one_line_naming_the_option(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(MosicError, match=r"^--out .*a_file/run: .*a_file is a file, not a folder"):
        check_output_place(tmp_path / "a_file" / "run", "--out")
    if os.access("/sys", os.W_OK) and os.path.isdir("/sys/kernel"):  # a kernel file system: no file can be made
        with pytest.raises(MosicError, match=r"^--stores /sys/kernel/stores: cannot write in /sys/kernel"):
            check_output_place("/sys/kernel/stores", "--stores")
    with pytest.raises(MosicError, match=r"GiB free in .* GiB needed"):
        check_output_place(tmp_path / "big", "--out", need_bytes=1 << 60)
