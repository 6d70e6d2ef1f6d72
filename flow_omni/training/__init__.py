"""Training: Lightning wrappers, recipes and the entry point (the only package that imports Lightning).

from flow_omni.training import TrainConfig, train
result = train(TrainConfig.load("run.yaml"))        # or: flow-omni train --config run.yaml
"""

from flow_omni.training.config import EvalSpec, ModelSpec, OptimConfig, TrainConfig
from flow_omni.training.train import TrainResult, recipe_path, train

__all__ = ["EvalSpec", "ModelSpec", "OptimConfig", "TrainConfig", "TrainResult", "recipe_path", "train"]
