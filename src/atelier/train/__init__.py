"""Training: one model-agnostic loop (:mod:`trainer`), per-family steps (:mod:`steps`, which registers
every family), checkpoints, and the entry point :func:`train_model`."""

from atelier.train import steps  # noqa: F401 - registers every family
from atelier.train.config import DataConfig, GenerativeTrainConfig, TrainConfig
from atelier.train.init_from import InitFromError, InitFromNote, InitReport, InitSource, load_init_source
from atelier.train.run import family_train_config, resume_configs, resume_run, train_model
from atelier.train.steps.cyclegan import CycleGANTrainConfig, UnpairedDataConfig
from atelier.train.steps.gan import GANTrainConfig
from atelier.train.steps.vae import VAETrainConfig
from atelier.train.trainer import Trainer, TrainingDiverged, TrainResult

__all__ = ["CycleGANTrainConfig", "DataConfig", "GANTrainConfig", "GenerativeTrainConfig", "InitFromError",
           "InitFromNote", "InitReport", "InitSource", "TrainConfig", "Trainer", "TrainingDiverged", "TrainResult",
           "UnpairedDataConfig", "VAETrainConfig", "family_train_config", "load_init_source", "resume_configs",
           "resume_run", "train_model"]
