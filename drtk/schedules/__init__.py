"""Ablation-probability schedules for DeepRefusal training: pure probability functions, vectorised mask
sampling that is right under any padding, and a resumable sampler.

Example:
    >>> from drtk.schedules import AblationSchedule, ScheduleSampler
    >>> s = AblationSchedule(p_site=0.5, p_token=0.5, depth_profile="decay", depth_half_life=16)
"""

from drtk.schedules.sampling import Masks, ScheduleSampler, region_and_depth, sample_masks
from drtk.schedules.schedule import AblationSchedule

__all__ = ["AblationSchedule", "Masks", "ScheduleSampler", "region_and_depth", "sample_masks"]
