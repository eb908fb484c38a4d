"""Framework-free core of the digit recognizer. Nothing here imports Streamlit.

Layers, top to bottom (import-linter contracts in pyproject.toml keep them, with no cycles):
``__main__`` (the CLI), ``learning`` (the only package importing Keras/TensorFlow), ``report``
(evaluation, charts), ``serving`` (ONNX Runtime), ``reading`` and ``storage`` (independent of each
other), ``data`` (the bundled MNIST) and ``config``.
"""
