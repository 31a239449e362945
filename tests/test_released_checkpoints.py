"""Released checkpoints in every shape they come in (the official MoSiC files, timm and training
containers): each loads into the tensors it was made from, or is refused in one line that names the
copies it holds and how to pick one; the pre-flight and the loader always agree."""

import pytest
import timm
import torch

from mosic import MosicError
from mosic.backbones import check_weights_file, create_backbone

NAME = "vit_small_patch14_dinov2"
TINY = dict(depth=2, embed_dim=48, num_heads=3, init_values=0.1)


def _net(seed: int):
    torch.manual_seed(seed)
    return timm.create_model(NAME, pretrained=False, num_classes=0, img_size=56, **TINY)


def _load(path):
    check_weights_file(path, NAME, TINY)  # the pre-flight
    return create_backbone(NAME, pretrained=False, weights=path, img_size=56, **TINY).state_dict()


def _same(loaded, source) -> bool:
    return loaded.keys() == source.keys() and all(torch.equal(loaded[k], v) for k, v in source.items())


@pytest.mark.parametrize("shape", ["plain", "feature_extractor.model.", "model.", "{'model': ...}",
                                   "{'module': ...}", "{'state_dict': {'model.': ...}}"])
def test_a_single_copy_loads_into_the_tensors_it_was_made_from(tmp_path, shape):
    sd = _net(0).state_dict()
    if shape == "plain":
        obj = sd
    elif shape.endswith("."):
        obj = {shape + k: v for k, v in sd.items()}
    elif shape == "{'state_dict': {'model.': ...}}":
        obj = {"state_dict": {"model." + k: v for k, v in sd.items()}, "epoch": 7}
    else:
        obj = {shape[2:-8]: sd, "epoch": 7}
    torch.save(obj, tmp_path / "w.pth")
    assert _same(_load(tmp_path / "w.pth"), sd)


@pytest.mark.parametrize("layout", ["nested", "flat", "flat with a common prefix"])
def test_a_file_with_a_student_and_a_teacher_is_refused_naming_both_unless_one_is_picked(tmp_path, layout):
    student, teacher = _net(1).state_dict(), _net(2).state_dict()
    if layout == "nested":
        obj = {"student": student, "teacher": teacher, "epoch": 3}
    else:
        pre = "model." if layout.endswith("prefix") else ""
        obj = {**{f"{pre}student.{k}": v for k, v in student.items()},
               **{f"{pre}teacher.{k}": v for k, v in teacher.items()}}
        if pre:
            obj = {"model": {k[len(pre):]: v for k, v in obj.items()}}
    path = tmp_path / "mosic.pth"
    torch.save(obj, path)
    for check in (lambda: check_weights_file(path, NAME, TINY),
                  lambda: create_backbone(NAME, pretrained=False, weights=path, img_size=56, **TINY)):
        with pytest.raises(MosicError, match=r"holds 2 backbone copies \(student, teacher\): pick one with "
                                             rf"--weights {path}#teacher"):
            check()
    assert _same(_load(f"{path}#teacher"), teacher) and _same(_load(f"{path}#student"), student)
    with pytest.raises(MosicError, match=r"has no backbone copy 'ema'; it holds 'student', 'teacher'"):
        _load(f"{path}#ema")


def test_a_timm_training_checkpoint_with_its_ema_is_a_choice_too(tmp_path):
    sd, ema = _net(3).state_dict(), _net(4).state_dict()
    torch.save({"state_dict": sd, "state_dict_ema": ema, "optimizer": {"state": {}, "param_groups": []}},
               tmp_path / "timm.pth")
    with pytest.raises(MosicError, match=r"2 backbone copies \(state_dict, state_dict_ema\)"):
        _load(tmp_path / "timm.pth")
    assert _same(_load(f"{tmp_path / 'timm.pth'}#state_dict_ema"), ema)
