"""Serving: the exported inference file in ONNX Runtime (`runtime`), predictions (`predict`), the
"not a digit" score (`novelty`), calibration (`calibrate`) and saliency (`saliency`).

No TensorFlow or Keras here: models are served from the ``NAME.onnx`` file that
`core.learning.export` writes when a model is saved, verified by the checksums in its metadata.
"""
