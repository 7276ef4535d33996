"""dynbench: adaptive-inference methods for BERT-style encoders, compared on GLUE at counted FLOPs."""

__version__ = "0.1.0"
