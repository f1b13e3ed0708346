"""MIQA's preprocessing (LPS+ array, min-max, native-grid 64^3 tiles) against a plain re-implementation."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from models import miqa_reference
from models.inference import volume_outputs
from models.networks import MIQA_OUTPUTS, build_network, miqa_network
from models.preprocessing import MIQA, PreprocessConfig, preprocess, tile_grid, tile_starts, tiles
from tests.conftest import SHARED_DATA

IXI = SHARED_DATA / "ixi-dti" / "DTI-00.nii.gz"
MIQA_T1 = SHARED_DATA / "miqa-weights" / "miqaT1-val0.pth"

pytestmark = pytest.mark.usefixtures("two_torch_threads")


def test_tile_starts_follow_miqa_placement():
    assert tile_starts(64, 64) == [0]
    assert tile_starts(56, 64) == [0]
    assert tile_starts(128, 64) == [0, 64]
    assert tile_starts(197, 64) == [0, 44, 89, 133]
    assert len(tile_grid((197, 233, 189), (64, 64, 64))) == 4 * 4 * 3


def test_miqa_preprocessing_and_tiles_match_a_plain_reimplementation():
    image = preprocess(MIQA)({"image": str(IXI)})["image"]
    expected = miqa_reference.lps_array(IXI)
    assert tuple(image.shape[1:]) == (128, 128, 64)  # 56 slices padded at the end to one tile
    assert np.allclose(image[0, :, :, :56].numpy(), expected, atol=1e-6)
    assert np.allclose(image[0, :, :, 56:].numpy(), expected[:, :, -1:], atol=1e-6)
    ours = tiles(image, MIQA)
    reference = miqa_reference.tiles(expected)
    assert ours.shape == (len(reference), 1, 64, 64, 64) == (4, 1, 64, 64, 64)
    for mine, theirs in zip(ours, reference):
        assert np.allclose(mine[0].numpy(), theirs, atol=1e-6)


def test_whole_volume_configs_give_one_input_and_reject_unknown_fits():
    image = torch.rand(1, 32, 32, 32)
    assert tiles(image, PreprocessConfig(spatial_size=(32, 32, 32))).shape == (1, 1, 32, 32, 32)
    with pytest.raises(ValueError, match="fit must be one of"):
        PreprocessConfig(fit="crop")
    assert PreprocessConfig.from_dict(MIQA.as_dict()) == MIQA


def test_a_warm_start_from_miqa_scores_what_miqas_network_scores():
    """The remapped head is an affine map of MIQA's outputs: same ranking, so the same AUC before any training."""
    original = build_network("miqa", len(MIQA_OUTPUTS))
    original.load_state_dict(torch.load(MIQA_T1, map_location="cpu", weights_only=True))
    output_map = [{"kind": "usable", "key": "usable", "entry_id": None},
                  {"kind": "artifact", "key": "ghosting_motion", "entry_id": 6}]
    warm, _ = miqa_network(MIQA_T1, output_map)
    image = preprocess(MIQA)({"image": str(IXI)})["image"]
    with torch.inference_mode():
        before = volume_outputs(original.eval(), image, MIQA)
        after = volume_outputs(warm.eval(), image, MIQA)
    assert float(after[0]) == pytest.approx(0.4 * float(before[0]) - 2.0, abs=1e-4)
    assert float(after[1]) == pytest.approx(4 * float(before[MIQA_OUTPUTS.index("ghosting_motion")]) - 2.0, abs=1e-4)
