"""The learning tier: building (`model`), training (`train`), fine-tuning (`finetune`), saving and
loading the Keras model of a stored one (`persist`) and exporting models (`export`).

The only package that imports Keras or TensorFlow (an import-linter contract in pyproject.toml checks
it); the web tier reads models through the files exported here.
"""
