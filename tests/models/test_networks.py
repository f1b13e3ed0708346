"""Networks, MIQA's published weights remapped onto a project's outputs, and registry aliases."""
from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from models import registry
from models.networks import MIQA_OUTPUTS, build_network, miqa_network, remap_head
from tests.conftest import SHARED_DATA

MIQA_WEIGHTS = SHARED_DATA / "miqa-weights" / "miqaMix-val0.pth"


pytestmark = pytest.mark.usefixtures("two_torch_threads")


def _map(*keys):
    return [{"kind": "usable", "key": "usable", "entry_id": None} if key == "usable"
            else {"kind": "artifact", "key": key, "entry_id": index} for index, key in enumerate(keys)]


@pytest.mark.parametrize("arch", ["densenet_small", "resnet_small"])
def test_small_3d_networks_give_one_logit_per_output(arch):
    net = build_network(arch, 3).eval()
    assert net(torch.rand(2, 1, 32, 32, 32)).shape == (2, 3)


def test_2d_backbone_takes_one_channel_and_a_local_weights_file(tmp_path):
    from torchvision.models import resnet18

    weights = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), weights)
    net = build_network("resnet18_2d", 2, spatial_dims=2, weights_file=weights).eval()
    assert net(torch.rand(2, 1, 64, 64)).shape == (2, 2)
    with pytest.raises(ValueError, match="does not take 3-D"):
        build_network("resnet18_2d", 2, spatial_dims=3)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network("vgg", 2)


def test_miqa_weights_keep_matching_outputs_and_add_new_ones():
    original = build_network("miqa", len(MIQA_OUTPUTS))
    original.load_state_dict(torch.load(MIQA_WEIGHTS, map_location="cpu", weights_only=True))
    net, kept = miqa_network(MIQA_WEIGHTS, _map("usable", "ghosting_motion", "new_artifact", "inhomogeneity"))
    assert kept == ["usable", "ghosting_motion", "inhomogeneity"]
    image = torch.rand(1, 1, 64, 64, 64)
    original.eval(), net.eval()
    with torch.no_grad():
        before, after = original(image)[0], net(image)[0]
    assert after.shape == (4,)
    assert after[0] == pytest.approx(0.4 * float(before[0]) - 2.0, abs=1e-4)
    assert after[1] == pytest.approx(4 * float(before[MIQA_OUTPUTS.index("ghosting_motion")]) - 2.0, abs=1e-4)
    assert after[3] == pytest.approx(4 * float(before[MIQA_OUTPUTS.index("inhomogeneity")]) - 2.0, abs=1e-4)
    with pytest.raises(FileNotFoundError):
        miqa_network(MIQA_WEIGHTS.parent / "missing.pth", _map("usable"))


def test_champion_head_is_matched_by_entry_id_before_key():
    net = build_network("resnet_small", 3)
    old = [{"kind": "usable", "key": "usable", "entry_id": None},
           {"kind": "artifact", "key": "ghosting", "entry_id": 7}, {"kind": "artifact", "key": "wrap", "entry_id": 8}]
    weights = net.fc.weight.detach().clone()
    new = [{"kind": "artifact", "key": "ghosting_renamed", "entry_id": 7}, {"kind": "usable", "key": "usable"},
           {"kind": "artifact", "key": "brand_new", "entry_id": 9}]
    assert remap_head(net, old, new) == ["ghosting_renamed", "usable"]
    assert torch.equal(net.fc.weight[0], weights[1]) and torch.equal(net.fc.weight[1], weights[0])
    assert net.fc.out_features == 3


def test_first_version_is_champion_then_challengers_until_promoted(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("qcloop-aliases")
    assert registry.alias_version(uri, "qcloop-aliases") is None
    versions = [client.create_model_version("qcloop-aliases", str(tmp_path)).version for _ in range(2)]
    assert registry.assign_new_version(uri, "qcloop-aliases", versions[0]) == "champion"
    assert registry.assign_new_version(uri, "qcloop-aliases", versions[1]) == "challenger"
    registry.promote(uri, "qcloop-aliases", versions[1])
    assert registry.alias_version(uri, "qcloop-aliases") == str(versions[1])
    with pytest.raises(LookupError, match="no champion version"):
        registry.load(uri, "qcloop-missing")
