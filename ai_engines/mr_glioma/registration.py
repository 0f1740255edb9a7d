"""The one Mattes mutual-information registration method of the MR glioma pre-processing.

Two fits use it with their own parameters: the rigid sequence-to-reference registration
(:func:`ai_engines.mr_glioma.preprocess.register`) and the affine atlas fit of the
intracranial prior (:func:`ai_engines.mr_glioma.atlas.intracranial_prior`).
"""

from __future__ import annotations

from collections.abc import Sequence

import SimpleITK as sitk  # noqa: N813

HISTOGRAM_BINS = 32


def mattes_mi_method(*, sampling: float, learning_rate: float, min_step: float, iterations: int,
                     shrink_factors: Sequence[int], smoothing_mm: Sequence[float],
                     seed: int = 1) -> sitk.ImageRegistrationMethod:
    """A Mattes-MI registration method: random sampling, linear interpolation, regular-step
    gradient descent with scales from physical shift, a multi-resolution pyramid.

    Parameters
    ----------
    sampling
        Share of the fixed image's voxels sampled (randomly, with ``seed``) for the metric.
    learning_rate, min_step, iterations
        The regular-step gradient descent's first step, smallest step and iterations per level.
    shrink_factors, smoothing_mm
        One entry per resolution level: shrink factor and Gaussian sigma in mm.
    seed
        The metric's sampling seed (fixed: the same study gives the same fit).
    """
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate, minStep=min_step, numberOfIterations=iterations, relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(smoothing_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method
