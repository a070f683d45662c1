"""edgesdk.compress: what changes the model: export (ONNX, TFLite), pruning and recovery, quantization and the
accuracy budget, and the pipeline stages that wrap them (``edgesdk.compress.stages``).

The package is also the one verb, ``edgesdk.compress(model, example_inputs, recipe, out_dir=...)``; the root
package makes it callable (see edgesdk/__init__.py), so nothing here imports the API.
"""
