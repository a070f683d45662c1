"""edgesdk.compress: what changes the model (export, later pruning and quantization)."""
