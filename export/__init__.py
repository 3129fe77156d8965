"""Release recipes: a finished training run -> a release folder (weights, ONNX, card, checksums) -> the Hub.

Run ``python -m export.release --help``; see docs/release.md.
"""
