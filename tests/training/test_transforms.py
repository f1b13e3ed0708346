"""Preprocessing and its disk cache, and artifact synthesis that sets the label it adds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.training.conftest import GHOSTING, LESIONS, write_volume
from training.data import USABLE, Item
from training.transforms import (
    SYNTHESIZERS,
    ArtifactSynthesisd,
    AugmentConfig,
    PreprocessConfig,
    cache_key,
    cached_volumes,
    preprocess,
)


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
    assert cache_key({"checksum": checksum}, small) != cache_key({"checksum": checksum}, other)
    assert cache_key({"checksum": checksum}, small) != cache_key({"checksum": "0" * 64}, small)
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
