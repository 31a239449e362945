"""One typed settings tree: a pipeline of ``pipelines.yaml`` (:mod:`mosic.config.pipeline`) holds its
training settings (:mod:`mosic.config.train`); both are read strictly (:mod:`mosic.config.strict`).
The defaults are those of the typed models, the paper's recipe; ``pipelines.yaml`` states what a
pipeline changes, and ``--print-config`` shows every value a command resolved."""

from mosic.config.pipeline import (ClipSettings, DatasetSettings, PipelineConfig, StoreLayout, TrackerSettings,
                                   describe_pipelines, find_pipelines_file, load_pipeline, packaged_pipelines_file,
                                   pipeline_names, read_pipelines, with_overrides)
from mosic.config.slurm import SlurmSettings
from mosic.config.strict import check_setting, nearest, parse_set_value, settings_keys, validation_line
from mosic.config.train import (LossSettings, ModelSettings, OptimSettings, TrainSettings, ValidateSettings,
                                WandbSettings, train_settings)

__all__ = ["ClipSettings", "DatasetSettings", "LossSettings", "ModelSettings", "OptimSettings", "PipelineConfig", "SlurmSettings",
           "StoreLayout", "TrackerSettings", "TrainSettings", "ValidateSettings", "WandbSettings", "check_setting",
           "describe_pipelines", "find_pipelines_file", "load_pipeline", "nearest", "packaged_pipelines_file",
           "parse_set_value", "pipeline_names", "read_pipelines", "settings_keys", "train_settings", "validation_line",
           "with_overrides"]
