"""Framework-free core of the digit recognizer: data, preprocessing, models, training, store, serving.

Nothing here imports Streamlit. Keras and TensorFlow are imported lazily, only where models are
built, trained, fine-tuned or exported (model, train, finetune, learning, ModelStore.save/load);
reading and serving (preprocess, multi, novelty, serving) run on numpy, Pillow, scipy and ONNX Runtime.
"""
