"""Hostile dataset files: tar archives, pickles and forget-index files built to exhaust memory or
crash the reader get a one-line DataError / InvalidSplitError, and small peak memory.

Every hostile file is built in ``tmp_path`` without holding its claimed size: a tar header that
claims a huge member, or a gzip stream made of many copies of one compressed block of zeros.
Peak memory is measured in a subprocess (``ru_maxrss``), once for all the memory cases.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import unlearnkit as uk
from unlearnkit.data import archives
from unlearnkit.data import cifar as cifar_module
from unlearnkit.data import splits as splits_module
from unlearnkit.data.archives import MAX_MEMBER_BYTES, iter_tar_files, safe_extract
from unlearnkit.data.cifar import MAX_BATCH_BYTES
from unlearnkit.data.safe_pickle import safe_loads
from unlearnkit.exceptions import DataError, InvalidSplitError

MiB = 1 << 20
GB15 = 1536 * MiB


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ----------------------------------------------------------------------------- hostile archives
def _header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _gzip_of_zeros(path: Path, head: bytes, mib: int, tail: bytes = b"") -> Path:
    """A tar.gz: ``head``, ``mib`` MiB of zeros, ``tail`` and the end-of-archive blocks; a few
    hundred bytes per MiB on disk, never all in memory (concatenated gzip members)."""
    block = gzip.compress(bytes(MiB), 9)
    with open(path, "wb") as f:
        f.write(gzip.compress(head))
        for _ in range(mib):
            f.write(block)
        f.write(gzip.compress(tail + bytes(1024)))
    return path


def _claiming(path: Path, name: str, size: int) -> Path:
    """A tar.gz whose only member claims ``size`` bytes but holds a few (it is truncated)."""
    path.write_bytes(gzip.compress(_header(name, size) + bytes(512)))
    return path


def test_huge_image_member_is_refused_by_its_header(tmp_path):
    archive = _claiming(tmp_path / "tree.tar.gz", "train/cat/0.png", GB15)
    with pytest.raises(DataError) as exc:
        uk.load_dataset("imagefolder", root=archive, cache=False)
    message = _one_line(exc)
    assert "'train/cat/0.png' claims 1610612736 bytes" in message
    assert f"more than the {MAX_MEMBER_BYTES} bytes" in message and "tree.tar.gz" in message


def test_huge_cifar_batch_member_is_refused_read_or_extracted(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar_module, "MAX_BATCH_BYTES", 1000)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 1001
        tf.addfile(info, io.BytesIO(bytes(1001)))
    with pytest.raises(DataError, match=r"'cifar-10-batches-py/data_batch_1' claims 1001 bytes, "
                                        r"more than the 1000 bytes") as exc:
        uk.load_dataset("cifar10", root=archive)
    _one_line(exc)
    root = tmp_path / "root"
    root.mkdir()
    archive.rename(root / archive.name)
    with pytest.raises(DataError, match=r"Refusing to extract .*data_batch_1' claims 1001") as exc:
        uk.load_dataset("cifar10", root=root)
    _one_line(exc)
    assert not (root / "cifar-10-batches-py").exists()
    assert MAX_BATCH_BYTES > 160_000_000  # CIFAR-100's train batch still fits


def test_unselected_members_are_skipped_unread(tmp_path):
    """A member the caller does not select may claim anything: it is never read, even with a
    size cap of 1 byte."""
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in (("train/cat/notes.txt", b"x" * 5000), ("train/cat/0.png", b"PNG")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    got = list(iter_tar_files(path, lambda parts: parts[-1].endswith(".png"),
                              max_member_bytes=3))
    assert got == [(("train", "cat", "0.png"), b"PNG")]
    with pytest.raises(DataError, match=r"'train/cat/notes\.txt' claims 5000 bytes"):
        list(iter_tar_files(path, max_member_bytes=3))


def test_member_count_is_capped_and_headers_are_not_kept(tmp_path, monkeypatch):
    path = tmp_path / "many.tar.gz"
    path.write_bytes(gzip.compress(b"".join(_header(f"d/{i}", 0) for i in range(60)) + bytes(1024)))
    seen = []
    real_next = tarfile.TarFile.next

    def spying_next(self):
        seen.append(len(self.members))
        return real_next(self)

    monkeypatch.setattr(tarfile.TarFile, "next", spying_next)
    assert len(list(iter_tar_files(path))) == 60
    assert max(seen) <= 1  # tarfile's own iteration would hold all 60 headers
    monkeypatch.setattr(archives, "MAX_MEMBERS", 50)
    with pytest.raises(DataError, match=r"many\.tar\.gz' holds more than 50 members") as exc:
        list(iter_tar_files(path))
    _one_line(exc)
    with pytest.raises(DataError, match="more than 50 members"):
        safe_extract(path, tmp_path / "out")


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE], ids=["gnu", "pax"])
def test_oversized_name_header_is_refused(tmp_path, kind):
    path = tmp_path / "h.tar.gz"
    path.write_bytes(gzip.compress(_header("././@LongLink", GB15, kind) + bytes(2048)))
    with pytest.raises(DataError, match=r"h\.tar\.gz' is not a valid tar archive.*header claims "
                                        r"1610612736 bytes") as exc:
        list(iter_tar_files(path))
    _one_line(exc)


# ----------------------------------------------------------------------------- hostile pickles
def _g(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _i(n: int) -> bytes:
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def _u(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _b(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


P2 = b"\x80\x02"
MA = "numpy.core.multiarray"


def _dtype(code: str, flags: int = 0, fields: bytes = b"N", elsize: int = -1) -> bytes:
    """numpy's reduce of a dtype; ``elsize`` (and alignment 1) as numpy writes for void types."""
    align = -1 if elsize == -1 else 1
    return (_g("numpy", "dtype") + _u(code) + b"\x89\x88\x87R"
            + b"(" + _i(3) + _u("|") + b"N" + fields + b"N" + _i(elsize) + _i(align) + _i(flags)
            + b"tb")


def _array(shape: tuple[int, ...], dtype: bytes, raw: bytes) -> bytes:
    """numpy's own reduce: _reconstruct(ndarray, (0,), b'b'), BUILD (1, shape, dtype, F, raw)."""
    dims = b"(" + b"".join(_i(d) for d in shape) + b"t"
    return (_g(MA, "_reconstruct") + _g("numpy", "ndarray") + _i(0) + b"\x85" + b"C\x01b"
            + b"\x87R" + b"(" + _i(1) + dims + dtype + b"\x89" + raw + b"tb")


def _call(module: str, name: str, *args: bytes) -> bytes:
    return _g(module, name) + b"(" + b"".join(args) + b"tR"


def test_handmade_array_pickle_is_read():
    got = safe_loads(P2 + _array((2, 3), _dtype("u1"), _b(bytes(range(6)))) + b".")
    assert type(got) is np.ndarray and got.dtype == np.uint8
    assert got.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_python2_style_cifar_pickle_is_read():
    """Python 2's CIFAR batches: __builtin__ names, int flags for dtype(), str (BINSTRING) data."""
    dtype = (_g("numpy", "dtype") + b"U\x02u1" + b"K\x00K\x01\x87R"
             + b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    data = _array((1, 4), dtype, b"U\x04\x00\xff\x80\x07")
    labels = _call("__builtin__", "list", b"(K\x07t")
    blob = P2 + b"}(U\x04data" + data + b"U\x06labels" + labels + b"u."
    got = safe_loads(blob)
    assert got["data"].tolist() == [[0, 255, 128, 7]] and got["labels"] == [7]
    assert safe_loads(blob, encoding="bytes")[b"data"].dtype == np.uint8


@pytest.mark.parametrize("protocol", range(6))
def test_every_protocol_round_trips(protocol):
    value = {
        "u1": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "swapped": np.arange(5, dtype=">u4"),
        "f4": np.linspace(0, 1, 7, dtype=np.float32),
        "text": np.array(["ab", "cde"]),
        "bytes_arr": np.array([b"x", b"yz"]),
        "when": np.array(["2024-01-02"], dtype="M8[ns]"),
        "scalar": np.float64(2.5),
        "raw": b"\x00\xff" * 10,
        "buf": bytearray(b"abc"),
        "misc": [1, 2**70, -3.5, complex(1, 2), None, True, "\u00e9", (1, "a")],
        "sets": (frozenset({1, 2}), {3}),
    }
    dumped = pickle.dumps(value, protocol=protocol)
    got = safe_loads(dumped)
    assert got.keys() == value.keys()
    for key, want in pickle.loads(dumped).items():  # numpy reads '>u4' back as native uint32
        if isinstance(want, np.ndarray):
            assert type(got[key]) is np.ndarray and got[key].dtype == want.dtype
            np.testing.assert_array_equal(got[key], want)
        else:
            assert got[key] == want and type(got[key]) is type(want)


@pytest.mark.parametrize(
    ("payload", "pattern"),
    [
        (P2 + _call("builtins", "bytearray", _i(GB15)) + b".",
         r"bytearray\(\) would take 1610612736 bytes, more than a 31-byte pickle may build"),
        (P2 + _call("builtins", "bytes", _i(2**40)) + b".", r"bytes\(\) would take 1099511627776"),
        (P2 + _call("__builtin__", "str", _call("builtins", "bytes", _i(2**29))) + b".",
         r"bytes\(\) would take 536870912 bytes"),
        (P2 + _call(MA, "_reconstruct", _g("numpy", "ndarray"), b"(" + _i(2**40) + b"t",
                    b"C\x01b") + b".",
         r"a numpy array of shape \(1099511627776,\) and dtype int8 would take"),
        (P2 + _call("numpy", "ndarray", b"(" + _i(2**30) + b"t") + b".",
         r"it calls numpy\.ndarray, which is not an admitted constructor"),
        (P2 + _array((2**20, 2**20), _dtype("u1"), _b(b"x")) + b".",
         r"needs 1099511627776 bytes of data, got 1 bytes"),
        (P2 + _array((2,), _dtype("O"), b"]") + b".", r"holds Python objects"),
        (P2 + _array((1,), _dtype("u1", flags=8), _b(b"x")) + b".",
         r"dtype state of '\|u1' disagrees with its type code"),
        (P2 + _dtype("V16", fields=b"}") + b".", r"not that of a plain numpy type"),
        (P2 + _call(MA, "scalar", _dtype("V536870912", elsize=536870912)) + b".",
         r"not given its 536870912 bytes"),
        (P2 + _call(MA, "scalar", _dtype("V8", elsize=-5), _b(bytes(8))) + b".",
         r"dtype state of .* disagrees"),
        (b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b".",
         r"bytearray claims 1099511627776 bytes"),
        (P2 + _g("builtins", "bytes") + _i(GB15) + b"\x85\x81.", r"NEWOBJ"),
        (P2 + _call("builtins", "bytearray", _i(3)) + _i(1) + b"a.",
         r"APPEND is applied to a bytearray"),
        (P2 + _call("builtins", "str", _call("builtins", "list", b"")) + b".",
         r"str\(\) of a list"),
        (P2 + _g("os", "system") + b".", r"Refusing to unpickle the global os\.system"),
    ],
    ids=["bytearray", "bytes", "str-of-bytes", "reconstruct", "ndarray-call", "state-size",
         "object-array", "dtype-flags", "dtype-fields", "void-scalar", "void-size", "bytearray8",
         "newobj", "append", "str-of-list", "global"],
)
def test_hostile_pickle_is_refused(payload, pattern):
    with pytest.raises(DataError, match=pattern) as exc:
        safe_loads(payload, where="'evil'")
    assert "'evil'" in _one_line(exc)


def test_repeated_constructions_share_one_budget():
    """One memoized 64 KiB string re-encoded 400 times, each encode small on its own: the total
    (26 MB from a 66 KB file) is what is refused."""
    text = "a" * (64 * 1024)
    once = _g("_codecs", "encode") + b"(h\x00" + _u("latin1") + b"tR"
    payload = P2 + b"]" + _u(text) + b"q\x000" + b"(" + once * 400 + b"e."
    with pytest.raises(DataError, match=r"encoded text would take 65536 bytes, more than a "
                                        r"\d+-byte pickle may build \(8x its size"):
        safe_loads(payload)
    ok = P2 + b"]" + _u(text) + b"q\x000" + b"(" + once * 4 + b"e."
    assert [len(b) for b in safe_loads(ok)] == [65536] * 4


# ----------------------------------------------------------------------------- forget-index files
@pytest.fixture
def ds() -> uk.DataBundle:
    import torch

    return uk.DataBundle(
        name="pets",
        train=uk.ArrayDataset(torch.zeros(12, 1), torch.arange(12) % 3),
        test=uk.ArrayDataset(torch.zeros(3, 1), torch.arange(3)),
        class_names=("cat", "dog", "bird"),
    )


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("big.txt", "1\n12345678901234567890123\n", r"line 2: '12345678901234567890123' is too "
                                                     r"large \(valid: whole numbers from 0"),
        ("u64.txt", "18446744073709551615", r"'18446744073709551615' is too large"),
        ("huge.txt", "7" * 5000, r"a value starting '7777777777777777' runs over 64 characters"),
        ("huge2.txt", "1\n" + "7" * 5000 + "\n", r"line 2: '77777777777777777777\.\.\.' \(5000 "
                                                 r"characters\) is too large"),
        ("arabic.txt", "1 \u0663\n", r"line 1: '\u0663' is not an index .*digits 0-9"),
        ("negzero.txt", "-0", r"'-0' has a sign"),
        ("neg.txt", "3\n-1", r"line 2: '-1' has a sign"),
        ("plus.txt", "+3", r"'\+3' has a sign"),
        ("float.txt", "3.0", r"'3.0' is not an index"),
        ("under.txt", "1_000", r"'1_000' is not an index"),
        ("empty.txt", "", r"holds no index"),
        ("comments.txt", "# nothing\n\n", r"holds no index"),
        ("latin1.txt", b"3\n\xff\n", r"not UTF-8 text \(byte b'\\xff' at position 2\)"),
        ("deep.json", "[" * 100_000 + "]" * 100_000, r"flat JSON list .* nests"),
        ("e300.json", "[1, 1e300]", r"1e\+300 is not a valid index"),
        ("u64.json", "[18446744073709551615]", r"\[18446744073709551615\]"),
        ("long.json", "[" + "9" * 5000 + "]", r"'99999999999999999999\.\.\.' \(5000 characters\) "
                                              r"is not a valid index"),
        ("half.json", "[3.5]", r"3\.5 is not a valid index"),
        ("nan.json", "[NaN]", r"nan is not a valid index"),
        ("str.json", '["3"]', r"'\"3\"' is not a valid index"),
        ("bool.json", "[true]", r"'true' is not a valid index"),
        ("obj.json", '{"forget": [1]}', r"expected a JSON list"),
        ("empty.json", "[]", r"holds no index"),
        ("broken.json", "[1, 2", r"Expecting"),
    ],
)
def test_bad_index_files_give_one_line(tmp_path, name, content, pattern):
    path = _write(tmp_path, name, content)
    with pytest.raises(InvalidSplitError, match=pattern) as exc:
        uk.read_indices(path)
    assert f"from {str(path)!r}" in _one_line(exc)


def test_bad_npy_index_files(tmp_path):
    np.save(tmp_path / "u64.npy", np.array([3, 2**64 - 1], dtype=np.uint64))
    np.save(tmp_path / "f.npy", np.array([3.0, 1e300]))
    np.save(tmp_path / "half.npy", np.array([3.5]))
    np.save(tmp_path / "s.npy", np.array(["3"]))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "u64.npy").read_bytes()[:-4])
    for name, pattern in [("u64", r"\[18446744073709551615\]"), ("f", r"\[1e\+300\]"),
                          ("half", r"got 3\.5"), ("s", r"dtype <U1"), ("cut", r"Could not read")]:
        with pytest.raises(InvalidSplitError, match=pattern) as exc:
            uk.read_indices(tmp_path / f"{name}.npy")
        assert f"{name}.npy" in _one_line(exc)


def test_index_files_accepted_forms(tmp_path, ds):
    cases = {
        "bom.txt": "\ufeff3\r\n5,7\r\n# a comment\r\n",
        "crlf.txt": "3\r\n5\r\n7",
        "zeros.txt": "003 0005 " + "0" * 5000 + "7\n",
        "whole.json": "[3.0, 5, 7]",
        "negzero.json": "\ufeff[-0.0, 5, 7]",
    }
    for name, text in cases.items():
        got = uk.read_indices(_write(tmp_path, name, text))
        assert got.dtype == np.int64
        want = [0, 5, 7] if name == "negzero.json" else [3, 5, 7]
        assert got.tolist() == want, name
    np.save(tmp_path / "f.npy", np.array([3.0, 5.0]))
    split = uk.split_indices(ds, uk.read_indices(tmp_path / "f.npy"))
    assert split.forget_indices.tolist() == [3, 5]


def test_index_file_checked_against_the_training_set(tmp_path):
    path = _write(tmp_path, "f.txt", "1\n2 # two\n12\n")
    with pytest.raises(InvalidSplitError, match=r"line 3: 12 is out of range \(valid: whole "
                                                r"numbers 0-11, for 12 training samples\)"):
        uk.read_indices(path, num_samples=12)
    assert uk.read_indices(path, num_samples=13).tolist() == [1, 2, 12]
    many = _write(tmp_path, "many.txt", "1\n" * 13)
    with pytest.raises(InvalidSplitError, match="lists more than 12 indices"):
        uk.read_indices(many, num_samples=12)
    # ten million lines: refused from the file's size before reading (a sparse file)
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.truncate(20_000_000)
    with pytest.raises(InvalidSplitError, match=r"the file is 20000000 bytes, more than a list of "
                                                r"indices into 12 training samples takes"):
        uk.read_indices(huge, num_samples=12)
    with pytest.raises(InvalidSplitError, match="num_samples"):
        uk.read_indices(path, num_samples=0)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_text_reader_across_chunk_boundaries(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(splits_module, "_CHUNK", chunk)
    text = "\ufeff12, 345 # c 9 #\r\n\n6789\t0 #\n##\n  42,,7# x\n" + "0" * 200 + "1"
    assert uk.read_indices(_write(tmp_path, "c.txt", text)).tolist() == [12, 345, 6789, 0, 42, 7, 1]
    bad = _write(tmp_path, "b.txt", "1 2\n# 3\n4 x5 6\n")
    with pytest.raises(InvalidSplitError, match=r"line 3: 'x5' is not an index"):
        uk.read_indices(bad)


@pytest.mark.parametrize(
    ("indices", "shown"),
    [
        (np.array([3, 2**64 - 1], dtype=np.uint64), "[18446744073709551615]"),
        ([3, 1e300], "[1e+300]"),
        ([3, 10**30], "[10000000000000000000... (31 characters)]"),
        ([3, -(2**63)], "[-9223372036854775808]"),
    ],
)
def test_split_indices_reports_the_real_value(ds, indices, shown):
    with pytest.raises(InvalidSplitError, match="out of range") as exc:
        uk.split_indices(ds, indices)
    assert _one_line(exc).endswith(f"valid 0-11): {shown}.")


def test_split_indices_refuses_more_indices_than_samples(ds):
    with pytest.raises(InvalidSplitError, match=r"13 forget indices for 'pets', which has 12"):
        uk.split_indices(ds, np.zeros(13, dtype=np.int64))


# ----------------------------------------------------------------------------- peak memory
_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path

    from unlearnkit.data import imagefolder
    from unlearnkit.data.archives import iter_tar_files
    from unlearnkit.data.safe_pickle import safe_loads
    from unlearnkit.data.splits import read_indices

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB

    out = {}
    for name, kind, arg in json.loads(sys.argv[1]):
        before = peak()
        try:
            if kind == "images":
                result = len(list(imagefolder._archive_files(Path(arg))))
            elif kind == "tar":
                result = len(list(iter_tar_files(arg)))
            elif kind == "pickle":
                result = repr(safe_loads(Path(arg).read_bytes()))
            else:
                result = len(read_indices(arg))
        except Exception as exc:
            result = f"{type(exc).__name__}: {exc}"
        out[name] = {"grew": peak() - before, "result": result}
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def memory_runs(tmp_path_factory):
    """Each hostile file read in one subprocess: how much its peak RSS grew, and the outcome."""
    tmp = tmp_path_factory.mktemp("hostile")
    payloads = {
        "bytearray.pkl": P2 + _call("builtins", "bytearray", _i(GB15)) + b".",
        "memo.pkl": b"\x80\x02N\x72\xff\xff\xff\x0f.",  # LONG_BINPUT 2**28-1 (C pickle: 4 GB)
        "object.pkl": P2 + _array((10**7,), _dtype("O"), b"]K\x01a") + b".",  # numpy segfaults
    }
    for name, data in payloads.items():
        (tmp / name).write_bytes(data)
    _gzip_of_zeros(tmp / "notes.tar.gz", _header("data/train/cat/notes.txt", 128 * MiB), 128)
    _gzip_of_zeros(tmp / "longname.tar.gz",
                   _header("././@LongLink", 128 * MiB, tarfile.GNUTYPE_LONGNAME), 128)
    with open(tmp / "lines.txt", "w") as f:
        f.writelines(f"{i % 100_000}\n" for i in range(1_000_000))
    cases = [
        ("skip", "images", str(tmp / "notes.tar.gz")),
        ("longname", "tar", str(tmp / "longname.tar.gz")),
        ("bytearray", "pickle", str(tmp / "bytearray.pkl")),
        ("memo", "pickle", str(tmp / "memo.pkl")),
        ("object", "pickle", str(tmp / "object.pkl")),
        ("lines", "indices", str(tmp / "lines.txt")),
    ]
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, json.dumps(cases)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("case", "result"),
    [
        ("skip", 0),  # a 128 MB non-image member is skipped, never read (was read whole)
        ("longname", "header claims 134217728 bytes"),  # was read whole by tarfile
        ("bytearray", "bytearray() would take 1610612736 bytes"),  # took 1.5 GB from 30 bytes
        ("memo", "None"),  # the C unpickler sized its memo from the index: 2 GB from 9 bytes
        ("object", "holds Python objects"),  # numpy's __setstate__ crashed the process
        ("lines", 1_000_000),  # 1 M lines: 8 MB of indices (took 110 MB)
    ],
)
def test_peak_memory_stays_small(memory_runs, case, result):
    run = memory_runs[case]
    assert run["result"] == result if isinstance(result, int) else result in run["result"]
    print(f"{case}: peak RSS grew by {run['grew'] / MiB:.1f} MiB")
    assert run["grew"] < 40 * MiB, f"{case}: peak RSS grew by {run['grew'] / MiB:.0f} MiB"
