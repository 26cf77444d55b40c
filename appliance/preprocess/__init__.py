"""Series -> model input tensor: the one implementation, shared by the appliance and by training.

The pipeline is deliberately built from operations that are linear with weights summing to one (bilinear in-plane
resampling, linear interpolation between cardiac phases) followed by a percentile normalisation of the whole tensor.
That makes the output invariant to any positive affine change of the stored values (rescale slope/intercept, 12 vs
16 bit storage), which is the main source of vendor-to-vendor intensity differences. Pixels outside the source image
are therefore not interpolated against zeros; they are masked and set to 0 only after normalisation.

Only the frames that contribute to the output are read from disk: the geometry is planned from the `Frame` metadata
first, then the base/mid/apex slices' phases are loaded.
"""

from appliance.preprocess.geometry import ArrayFrame, SlicePlan, StackPlan, phase_weights, plan_stack
from appliance.preprocess.pixels import load_frame
from appliance.preprocess.resample import resample_images
from appliance.preprocess.spec import ALGORITHM, PreprocessError, PreprocessSpec
from appliance.preprocess.tensor import prepare, series_to_tensor, stack_from_arrays

__all__ = ["ALGORITHM", "ArrayFrame", "PreprocessError", "PreprocessSpec", "SlicePlan", "StackPlan", "load_frame",
           "phase_weights", "plan_stack", "prepare", "resample_images", "series_to_tensor", "stack_from_arrays"]
