"""SPLADE encoding: the model, its backends and pooling, ONNX export, the local and Ray encoders."""
