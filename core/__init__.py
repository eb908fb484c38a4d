"""Framework-free core of the digit recognizer: data, preprocessing, models, training, store, serving.

Nothing here imports Streamlit. Keras and TensorFlow are imported only in the learning tier
(`core.learning`: model, train, finetune, persist, export), lazily, where models are built, trained,
fine-tuned, saved, loaded or exported; reading and serving (preprocess, multi, novelty, store, serving)
run on numpy, Pillow, scipy and ONNX Runtime. The import-linter contracts in pyproject.toml keep it so.
"""
