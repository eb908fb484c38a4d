"""The learning tier: building, training, fine-tuning and exporting models.

The only place that imports Keras or TensorFlow (the rest of `core/training` code moves here with the
training issue); the web tier reads models through the files exported here.
"""
