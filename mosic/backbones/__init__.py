"""Backbones: any timm ViT of the VisionTransformer or Eva families, created, given its weights
(a local file in timm's or an official layout, the hub, or random) and run in parts.

- :mod:`mosic.backbones.families`: which family a model is, its patch, its normalisation, the forward in parts;
- :mod:`mosic.backbones.weights`: the one weights reader, layouts, conversion, loading, the pre-flight;
- :mod:`mosic.backbones.hub`: one attempt at the Hugging Face hub;
- :mod:`mosic.backbones.hub_folder`: a backbone as a Hugging Face / timm folder (written and read by timm);
- :mod:`mosic.backbones.create`: :func:`create_backbone`, used by training and evaluation alike.
"""

from mosic.backbones.create import create_backbone, preflight
from mosic.backbones.families import (IMAGENET_MEAN, IMAGENET_STD, check_backbone, crop_grid_size, embed, family,
                                      keep_tokens, mean_std, model_patch_size, patch_size, round_to_patch, run_blocks)
from mosic.backbones.hub import check_hub, check_hub_repo
from mosic.backbones.hub_folder import add_results_to_card, hub_source, write_hub_folder
from mosic.backbones.weights import (LAYOUTS, check_weights_file, convert_state_dict, detect_layout, fit_prefix,
                                     load_weights, read_weights, split_copy)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LAYOUTS", "add_results_to_card", "check_backbone", "check_hub",
           "check_hub_repo", "check_weights_file", "convert_state_dict", "create_backbone", "crop_grid_size",
           "detect_layout", "embed", "family", "fit_prefix", "hub_source", "keep_tokens", "load_weights", "mean_std",
           "model_patch_size", "patch_size", "preflight", "read_weights", "round_to_patch", "run_blocks", "split_copy",
           "write_hub_folder"]
