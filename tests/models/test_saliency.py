"""Saliency maps: on the scored file's own grid and affine, and pointing at what the network learned."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from models.inference import LoadedModel, miqa_published
from models.networks import build_network
from models.preprocessing import PreprocessConfig, preprocess
from models.saliency import saliency_image, target_layer
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.usefixtures("two_torch_threads")

IXI = SHARED_DATA / "ixi-dti" / "DTI-00.nii.gz"
DEFECT = (slice(4, 12), slice(18, 26), slice(6, 14))  # in the file's voxels
# x flipped and axes permuted: the network sees the volume reoriented, the map must come back
AFFINE = np.array([[0.0, -2.0, 0.0, 30.0], [2.0, 0.0, 0.0, -20.0], [0.0, 0.0, 2.0, 5.0], [0, 0, 0, 1]])


def test_miqa_map_has_the_frames_shape_and_affine():
    model = miqa_published(SHARED_DATA / "miqa-weights" / "miqaT1-val0.pth")
    image = saliency_image(model, str(IXI), "ghosting_motion")
    source = nib.load(str(IXI))
    assert image.shape == source.shape[:3] == (128, 128, 56)
    assert np.allclose(image.affine, source.affine)
    values = np.asarray(image.dataobj)
    assert values.min() == 0.0 and values.max() == 1.0 and np.isfinite(values).all()
    with pytest.raises(ValueError, match="no output 'halo'"):
        saliency_image(model, str(IXI), "halo")


def _volume(rng: np.random.Generator, defect: bool) -> np.ndarray:
    volume = rng.normal(100, 15, (32, 32, 32))
    if defect:
        volume[DEFECT] += 120
    return volume.astype(np.float32)


def test_a_model_trained_on_a_localized_defect_looks_at_the_defect(tmp_path):
    config = PreprocessConfig(spatial_size=(32, 32, 32), scaling="minmax")
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for index in range(24):
        path = tmp_path / f"v{index}.nii.gz"
        nib.save(nib.Nifti1Image(_volume(rng, index % 2 == 1), AFFINE), str(path))
        paths.append(path)
        labels.append([float(index % 2 == 0), float(index % 2 == 1)])  # usable, defect present
    chain = preprocess(config)
    inputs = torch.stack([chain({"image": str(path)})["image"] for path in paths])
    targets = torch.tensor(labels)
    torch.manual_seed(0)
    net = build_network("resnet_small", 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(40):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(inputs), targets)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2, "the network did not learn the defect"
    output_map = ({"kind": "usable", "key": "usable", "entry_id": None},
                  {"kind": "artifact", "key": "defect", "entry_id": 1})
    model = LoadedModel(net.eval(), output_map, config, "logits", "defects", "1", net)
    assert target_layer(net, config)  # a convolution keeping 8 voxels per axis

    image = saliency_image(model, str(paths[1]), "defect")
    assert image.shape == (32, 32, 32) and np.allclose(image.affine, AFFINE)
    values = np.asarray(image.dataobj)
    inside = np.zeros(values.shape, dtype=bool)
    inside[DEFECT] = True
    assert values[inside].mean() > 1.5 * values[~inside].mean(), (values[inside].mean(), values[~inside].mean())
