"""The inference engine as evaluation jobs use it: files scored in order while the next is read ahead,
one unreadable file reported in its place, preprocessed volumes cached and read back unchanged."""
from __future__ import annotations

import functools
import shutil

import nibabel as nib
import numpy as np
import pytest

from models import miqa_reference
from models.inference import Engine, miqa_published
from models.networks import build_network, MIQA_OUTPUTS
from models.preprocessing import MIQA, preprocess
from tests.conftest import SHARED_DATA

IXI = SHARED_DATA / "ixi-dti"
MIQA_T1 = SHARED_DATA / "miqa-weights" / "miqaT1-val0.pth"

pytestmark = pytest.mark.usefixtures("two_torch_threads")


def _missing() -> str:
    raise FileNotFoundError("the frame's file is gone")


def test_score_files_keeps_order_reports_each_failure_and_reuses_its_cache(tmp_path):
    import torch

    good = [shutil.copy(IXI / f"DTI-0{index}.nii.gz", tmp_path / f"v{index}.nii.gz") for index in range(2)]
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip")
    engine = Engine("sqlite://", tmp_path / "cache")
    model = miqa_published(MIQA_T1)
    files = [(functools.partial(str, good[0]), "a"), (functools.partial(str, corrupt), "b"), (_missing, "c"),
             (functools.partial(str, good[1]), None)]
    first = list(engine.score_files(model, files))
    assert isinstance(first[1], Exception) and isinstance(first[2], FileNotFoundError)
    net = build_network("miqa", len(MIQA_OUTPUTS))
    net.load_state_dict(torch.load(MIQA_T1, map_location="cpu", weights_only=True))
    for outcome, path in ((first[0], good[0]), (first[3], good[1])):
        expected = miqa_reference.scores(path, net.eval())
        assert max(abs(outcome.scores[key] - expected[key]) for key in expected) <= 1e-4
    cached = list((tmp_path / "cache").glob("*.npy"))
    assert len(cached) == 1  # only the file with a checksum; no partial file left
    assert not list((tmp_path / "cache").glob("*.tmp"))
    assert np.array_equal(np.load(cached[0]), preprocess(MIQA)({"image": str(good[0])})["image"].numpy())
    again = list(engine.score_files(model, files[:1]))
    assert again[0] == first[0]


def test_a_constant_image_scales_to_zeros_not_nan(tmp_path):
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.full((40, 40, 40), 7, dtype=np.int16), np.eye(4)), str(path))
    image = preprocess(MIQA)({"image": str(path)})["image"]
    assert image.shape == (1, 64, 64, 64) and float(image.abs().max()) == 0.0


def test_mc_dropout_uncertainty_is_seeded_bounded_and_leaves_the_network_alone():
    import torch

    from models.inference import LoadedModel, dropout_copy, optimized
    from models.preprocessing import PreprocessConfig

    torch.manual_seed(3)
    net = build_network("miqa", 2).eval()
    config = PreprocessConfig.from_dict({"spatial_size": [64, 64, 64]})
    output_map = ({"kind": "usable", "key": "usable"}, {"kind": "artifact", "key": "ghosting", "entry_id": 1})
    model = LoadedModel(net, output_map, config, "logits", "m", "1", optimized(net, config), dropout_copy(net))
    image = torch.rand((1, 64, 64, 64))
    state = torch.get_rng_state()
    first = model.uncertainty(image, passes=6)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert first == model.uncertainty(image, passes=6)  # seeded: the same volume, the same uncertainty
    assert first["method"] == "mc_dropout" and first["passes"] == 6
    assert set(first["entropy"]) == {"usable", "ghosting"} and all(0 <= v <= 1 for v in first["entropy"].values())
    assert not net.training and not any(m.training for m in net.modules())  # the shared network stays in eval
    assert model.uncertainty(image, passes=1) is None
    plain = build_network("densenet_small", 2)  # no dropout: nothing to sample
    assert dropout_copy(plain) is None
