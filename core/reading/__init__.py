"""Reading: from an image's bytes or pixels to what the model sees, with numpy, Pillow and scipy only.

`preprocess` decodes (formats, EXIF orientation, size limits) and turns one digit into an MNIST-style
28x28 (ink bright, background removed, fitted into 20x20 with antialiasing, centred by mass);
`segment` finds several digits in one image and reads them with one batched model call. No model
runtime is imported here (an import-linter contract in pyproject.toml).
"""
