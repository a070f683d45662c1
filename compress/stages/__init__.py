"""The pipeline's stages, one module per kind of target. Importing this package registers them all
(edgesdk.pipeline.STAGES); a new stage is one module here with ``@register_stage`` and one import line.

Example::

    from edgesdk.compress import stages  # noqa: F401
    from edgesdk.pipeline import STAGES
    STAGES["quantize_onnx"].takes   # 'onnx:fp32'
"""
from __future__ import annotations

from . import onnx, openvino, prune, tensorrt, tflite  # noqa: F401  (each registers its stages)
