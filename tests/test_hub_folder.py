"""A backbone as a Hugging Face / timm folder: written by mosic, read back by plain timm (``local-dir:``) with
every tensor and the same features, and taken by mosic's --weights like a state-dict file."""

import json

import pytest
import timm
import torch

from mosic import MosicError
from mosic.backbones import add_results_to_card, create_backbone, hub_source, preflight, write_hub_folder

TINY = dict(depth=2, embed_dim=48, num_heads=3, init_values=0.1)
NAME = "vit_small_patch14_dinov2"


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    net = create_backbone(NAME, pretrained=False, img_size=56, **TINY)
    return net, write_hub_folder(net, tmp_path / "hub", {"base_model": "vit_small_patch14_dinov2.lvd142m",
                                                         "recipe": "synthetic", "steps": 3})


def test_plain_timm_loads_the_folder_with_every_tensor_and_the_same_features(folder):
    net, path = folder
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architecture"] == NAME and cfg["model_args"]["depth"] == 2
    assert cfg["pretrained_cfg"]["input_size"] == [3, 56, 56] and cfg["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406]
    loaded = timm.create_model(f"local-dir:{path}", pretrained=True)  # nothing of mosic, no sizes given
    assert loaded.state_dict().keys() == net.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())
    x = torch.randn(2, 3, 56, 56)
    assert torch.equal(loaded.eval().forward_features(x), net.eval().forward_features(x))


def test_the_model_card_names_the_base_model_its_licence_and_the_recipe_and_keeps_one_results_table(folder):
    _, path = folder
    card = (path / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm\nlicense: apache-2.0\n")
    assert "vit_small_patch14_dinov2.lvd142m" in card and "- recipe: synthetic" in card and "- steps: 3" in card
    add_results_to_card(path, "| row | voc clustering |\n|---|---|\n| a | 10.0 |")
    add_results_to_card(path, "| row | voc clustering |\n|---|---|\n| a | 12.5 |")
    card = (path / "README.md").read_text()
    assert card.count("## Evaluation (mosic-eval)") == 1 and "12.5" in card and "10.0" not in card


def test_weights_take_a_folder_like_a_file_and_refuse_a_folder_of_another_architecture(folder, tmp_path):
    net, path = folder
    preflight(NAME, path)
    assert hub_source(path) == f"local-dir:{path}" and hub_source(tmp_path / "x.pth") is None
    again = create_backbone(NAME, weights=path, img_size=56)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in net.state_dict().items())
    with pytest.raises(MosicError, match="holds a 'vit_small_patch14_dinov2' backbone, not 'vit_base_patch16_224'"):
        create_backbone("vit_base_patch16_224", weights=path, img_size=56)
    (path / "model.safetensors").unlink()
    with pytest.raises(MosicError, match="has no model.safetensors"):
        preflight(NAME, path)
    with pytest.raises(MosicError, match="hf-hub:ORG/NAME"):
        hub_source("hf-hub:no slash")
