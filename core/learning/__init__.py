"""The learning tier: architectures (`model`), augmentation (`augment`), training (`train`),
fine-tuning (`finetune`), the "not a digit" detector's fitting (`detector`), export (`export`),
saving and loading Keras models (`persist`), and the Dask side: task entry points (`tasks`), the run
board the app and CLI submit through (`runs`) and the worker preload (`worker`).

The only package that imports Keras or TensorFlow (an import-linter contract in pyproject.toml checks
it); the web tier reads models through the files exported here.
"""
