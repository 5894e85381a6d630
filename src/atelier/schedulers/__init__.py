"""Noise and time schedules, and the ODE solvers that sample flow and diffusion models (kept apart from
the networks, as diffusers keeps its schedulers): pure tensor functions, no modules, no files."""

from atelier.schedulers.ddpm import DDPMSchedule, ddim_sample
from atelier.schedulers.flow import (
    SAMPLERS,
    TIME_SAMPLINGS,
    Solution,
    flow_interpolant,
    flow_target,
    sample_times,
    solve,
    time_grid,
)

__all__ = ["DDPMSchedule", "SAMPLERS", "Solution", "TIME_SAMPLINGS", "ddim_sample", "flow_interpolant", "flow_target",
           "sample_times", "solve", "time_grid"]
