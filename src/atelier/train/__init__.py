"""Training: one model-agnostic loop, per-family steps, checkpoints."""

from atelier.train.config import DataConfig, TrainConfig
from atelier.train.run import resume_configs, train_model
from atelier.train.trainer import Trainer, TrainingDiverged, TrainResult

__all__ = ["DataConfig", "TrainConfig", "Trainer", "TrainingDiverged", "TrainResult", "train_model", "resume_configs"]
