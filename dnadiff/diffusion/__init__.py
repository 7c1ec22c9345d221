"""Masked discrete diffusion (MDLM / MD4), generic over any vocabulary of V tokens (mask id = V).

This package imports nothing from the rest of dnadiff: any ``nn.Module`` mapping
(z_t LongTensor[B, L], t FloatTensor[B]) to logits FloatTensor[B, L, V] is a valid denoiser.
"""
from .build import build_diffusion
from .denoiser import call_denoiser
from .ema import EMA
from .genmd4 import GenMD4
from .guidance import ClassifierGuidance
from .likelihood import LikelihoodReport, evaluate, summarize
from .masked import MaskedDiffusion
from .confidence import ConfidenceOptions
from .process import DiffusionProcess, LossResult, ProcessBase, stratified_times
from .remdm import ReMDMOptions
from .reverse import SampleStats
from .sampling import SAMPLERS, Conditioning, Decoding, Windows, sample, time_grid, top_p_filter
from .schedules import (SCHEDULES, ClippedSchedule, CosineSchedule, GeometricSchedule, LinearSchedule, LogLinearSchedule,
                        MaskingSchedule, PolynomialSchedule, get_schedule)

__all__ = [
    "build_diffusion", "call_denoiser", "DiffusionProcess", "LossResult", "ProcessBase", "stratified_times", "EMA",
    "GenMD4", "MaskedDiffusion", "LikelihoodReport", "evaluate", "summarize", "sample", "time_grid", "top_p_filter",
    "SCHEDULES", "MaskingSchedule", "LinearSchedule", "CosineSchedule", "PolynomialSchedule", "GeometricSchedule",
    "LogLinearSchedule", "get_schedule", "ClippedSchedule", "SAMPLERS", "ReMDMOptions", "ConfidenceOptions",
    "ClassifierGuidance", "Conditioning", "Decoding", "Windows", "SampleStats",
]
