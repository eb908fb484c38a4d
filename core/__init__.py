"""Framework-free core of the digit recognizer: data, preprocessing, models, training, store, prediction.

Nothing here imports Streamlit; TensorFlow is imported lazily by the modules that need it
(model, train, store, predict) so that light callers (Home page, preprocessing) stay fast.
"""
