"""The serving tier's model side: the exported inference file in ONNX Runtime, predictions, saliency.

No TensorFlow or Keras here: models are served from the ``NAME.onnx`` file that
`core.learning.export` writes when a model is saved, verified by the checksums in its metadata.
"""
