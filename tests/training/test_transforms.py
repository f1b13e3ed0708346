"""Preprocessing and its disk cache, and artifact synthesis that sets the label it adds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.preprocessing import PreprocessConfig, preprocess
from tests.training.conftest import GHOSTING, LESIONS, write_volume
from training.data import USABLE, Item
from training.transforms import SYNTHESIZERS, ArtifactSynthesisd, AugmentConfig, cache_key, cached_volumes


def _item(path, checksum):
    return Item(1, 1, "s", str(path), checksum, [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], 1.0, "train")


def test_preprocess_gives_the_network_shape_scaled_to_unit_range(tmp_path):
    path = tmp_path / "a.nii.gz"
    write_volume(path, seed=1, artifact=None, shape=(40, 36, 28))
    for fit in ("resize", "pad_crop"):
        image = preprocess(PreprocessConfig(spatial_size=(32, 32, 32), fit=fit))({"image": str(path)})["image"]
        assert tuple(image.shape) == (1, 32, 32, 32) and image.dtype == torch.float32
        assert float(image.min()) >= 0.0 and float(image.max()) == pytest.approx(1.0)
    resampled = preprocess(PreprocessConfig(spatial_size=(16, 16, 16), pixdim=(4.0, 4.0, 4.0)))({"image": str(path)})
    assert tuple(resampled["image"].shape) == (1, 16, 16, 16)


def test_cache_is_keyed_by_checksum_and_settings_never_labels(tmp_path):
    path = tmp_path / "a.nii.gz"
    checksum = write_volume(path, seed=1, artifact=None)
    small, other = PreprocessConfig(spatial_size=(16, 16, 16)), PreprocessConfig(spatial_size=(24, 24, 24))
    named = {"image": str(path), "checksum": checksum}
    assert cache_key(named, small) != cache_key(named, other)
    assert cache_key(named, small) != cache_key({**named, "checksum": "0" * 64}, small)
    cache = tmp_path / "cache"
    first = cached_volumes([_item(path, checksum)], small, cache)[0]["image"]
    assert len(list(cache.glob("*.pt"))) == 1
    relabelled = _item(path, checksum)
    relabelled.targets = [0.0, 1.0, 0.0]
    assert torch.equal(cached_volumes([relabelled], small, cache)[0]["image"], first)
    assert len(list(cache.glob("*.pt"))) == 1
    cached_volumes([_item(path, checksum)], other, cache)[0]
    assert len(list(cache.glob("*.pt"))) == 2


def test_each_synthesizer_changes_the_volume_and_keeps_its_shape(tmp_path):
    path = tmp_path / "a.nii.gz"
    write_volume(path, seed=2, artifact=None)
    image = preprocess(PreprocessConfig(spatial_size=(32, 32, 32)))({"image": str(path)})["image"]
    for key, synthesize in SYNTHESIZERS.items():
        out = synthesize(image, np.random.RandomState(0))
        assert out.shape == image.shape and float(out.max()) <= 1.0 + 1e-6, key
        assert float((out - image).abs().mean()) > 1e-3, key


def test_synthesis_marks_the_artifact_present_and_the_usable_target_unknown():
    outputs = [USABLE, GHOSTING, LESIONS]
    sample = {"image": torch.rand(1, 16, 16, 16), "targets": torch.tensor([1.0, 0.0, 0.0]),
              "mask": torch.tensor([1.0, 1.0, 0.0])}
    always = ArtifactSynthesisd(outputs, AugmentConfig(synthesis={"ghosting_motion": 1.0}))
    out = always(dict(sample))
    assert out["targets"].tolist() == [0.0, 1.0, 0.0] and out["mask"].tolist() == [0.0, 1.0, 0.0]
    assert not torch.equal(out["image"], sample["image"])
    unusable = ArtifactSynthesisd(outputs, AugmentConfig(synthesis={"ghosting_motion": 1.0},
                                                        synthesis_usable="unusable"))
    assert unusable(dict(sample))["mask"].tolist() == [1.0, 1.0, 0.0]
    never = ArtifactSynthesisd(outputs, AugmentConfig(synthesis={"ghosting_motion": 0.0}))
    assert torch.equal(never(dict(sample))["image"], sample["image"])
    with pytest.raises(ValueError, match="no synthetic artifact for lesions"):
        AugmentConfig(synthesis={"lesions": 0.5})


def test_frames_without_checksum_are_never_cached_and_never_share_a_tensor(tmp_path):
    """The importer once left checksums empty: every file then hit one cache entry, the first scan's tensor."""
    paths = [tmp_path / f"{name}.nii.gz" for name in "abc"]
    for seed, path in enumerate(paths):
        write_volume(path, seed=seed, artifact="ghosting" if seed == 1 else None)
    config, cache = PreprocessConfig(spatial_size=(16, 16, 16)), tmp_path / "cache"
    with pytest.raises(ValueError, match="no checksum"):
        cache_key({"image": str(paths[0]), "checksum": ""}, config)
    volumes = cached_volumes([_item(path, "") for path in paths], config, cache)
    tensors = [volumes[index]["image"] for index in range(3)]
    assert not torch.equal(tensors[0], tensors[1]) and not torch.equal(tensors[1], tensors[2])
    assert not list(cache.glob("*.pt"))


def test_a_file_rewritten_in_place_gets_a_new_cache_key(tmp_path):
    path = tmp_path / "a.nii.gz"
    checksum = write_volume(path, seed=1, artifact=None)
    config = PreprocessConfig(spatial_size=(16, 16, 16))
    before = cache_key({"image": str(path), "checksum": checksum}, config)
    write_volume(path, seed=2, artifact="ghosting")
    assert cache_key({"image": str(path), "checksum": checksum}, config) != before
