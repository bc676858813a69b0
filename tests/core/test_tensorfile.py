"""The report reads reconstructions without torch (bench.core.tensorfile): what it reads equals
torch.load, and the numpy picture tiling equals torchvision's make_grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.utils import make_grid

from bench.core import store, tensorfile
from bench.report.figures import reconstruction_grid, tile


def saved(tmp_path, obj):
    path = tmp_path / "file.pt"
    store.save_torch(path, obj)
    return path


def test_arrays_equal_what_torch_loads(tmp_path):
    g = torch.Generator().manual_seed(0)
    obj = {
        "images": torch.rand(3, 1, 8, 8, generator=g),
        "visible": torch.rand(3, 16, generator=g) > 0.5,
        "recon": torch.rand(3, 2, 8, 8, generator=g)[:, :1, ::2, 1::2],  # a strided view
        "ids": torch.arange(-5, 5), "half": torch.rand(4, generator=g).half(),
        "bytes": torch.tensor([0, 255], dtype=torch.uint8), "scalar": torch.tensor(2.5),
        "shared": torch.arange(6.0).view(2, 3).t(),  # transposed: strides (1, 3)
        "patch_size": 2, "grid": (4, 4), "name": "x",
    }
    path = saved(tmp_path, obj)
    arrays = tensorfile.read_arrays(path)
    loaded = torch.load(path, weights_only=True)
    assert arrays.keys() == loaded.keys()
    for key, value in loaded.items():
        if isinstance(value, torch.Tensor):
            assert arrays[key].dtype == value.numpy().dtype, key
            assert np.array_equal(arrays[key], value.numpy()), key
        else:
            assert arrays[key] == value


def test_what_the_reader_cannot_follow_goes_to_torch(tmp_path):
    """A global outside tensors and plain containers, or a dtype numpy lacks, is refused by
    name (never guessed); `load_arrays` then asks torch."""
    with pytest.raises(tensorfile.UnreadableTensorFile, match="torch.float32"):
        tensorfile.read_arrays(saved(tmp_path, {"dtype": torch.float32}))
    bf16 = saved(tmp_path, {"x": torch.tensor([1.5, -2.0], dtype=torch.bfloat16)})
    with pytest.raises(tensorfile.UnreadableTensorFile):
        tensorfile.read_arrays(bf16)
    assert np.array_equal(tensorfile.load_arrays(bf16)["x"], np.array([1.5, -2.0], np.float32))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(tensorfile.UnreadableTensorFile):
        tensorfile.read_arrays(garbage)


@pytest.mark.parametrize("shape,nrow", [((5, 1, 8, 8), 5), ((6, 3, 4, 5), 4), ((1, 1, 8, 8), 1),
                                        ((7, 3, 4, 4), 3)])
def test_tile_equals_make_grid(shape, nrow):
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    expected = make_grid(torch.from_numpy(x), nrow=nrow, padding=2, pad_value=1.0).numpy()
    assert np.array_equal(tile(x, nrow), expected)


def test_reconstruction_grid_is_the_same_from_arrays_and_tensors(tmp_path):
    g = torch.Generator().manual_seed(1)
    rec = {"images": torch.rand(4, 1, 8, 8, generator=g), "visible": torch.rand(4, 16, generator=g) > 0.5,
           "recon": torch.rand(4, 1, 8, 8, generator=g), "patch_size": 2, "grid": (4, 4)}
    from_file = reconstruction_grid(tensorfile.read_arrays(saved(tmp_path, rec)))
    assert from_file.dtype == np.uint8 and from_file.shape == (3 * 10 + 2, 4 * 10 + 2, 3)
    assert np.array_equal(from_file, reconstruction_grid(rec))
    # what the torch version drew (torchvision's make_grid on torch arithmetic)
    vis = rec["visible"].view(-1, 1, 4, 4).float().repeat_interleave(2, 2).repeat_interleave(2, 3)
    rows = torch.cat([rec["images"], rec["images"] * vis + 0.5 * (1 - vis),
                      rec["images"] * vis + rec["recon"] * (1 - vis)]).clamp(0, 1)
    old = (make_grid(rows, nrow=4, padding=2, pad_value=1.0) * 255).round().to(torch.uint8)
    assert np.array_equal(from_file, old.permute(1, 2, 0).numpy())
