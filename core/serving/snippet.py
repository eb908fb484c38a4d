"""The short program the Home page shows beside a model's ``NAME.onnx`` download: it reads one digit
with that file alone (numpy, Pillow and onnxruntime; no TensorFlow, no code of this app).

It does the essentials of MNIST's normalisation (grey, ink bright on black, background at 0,
cropped to the ink, fitted into 20x20, centre of mass at the centre of 28x28) and nothing more; the
app's own reading (`core.reading.preprocess.to_mnist`) also handles uneven paper and lighting,
transparency, photo orientation and noise. Centring by mass stays in, short as the program is: for
the small MLP of the tests, centring the ink's box instead agreed with the app on 70% of 500 MNIST
test digits drawn dark on white, against 99.8% with it. The file's first output holds the model's
raw probabilities: the app's confidence is calibrated (`core.serving.calibrate`), the digit (their
argmax) is the same.

tests/test_take_home.py runs the program as the page shows it, on PNG files."""

from __future__ import annotations

SNIPPET_IMAGE = "digit.png"  # the image file the snippet opens, beside the model file

_TEMPLATE = '''\
import numpy as np, onnxruntime as ort
from PIL import Image

g = np.asarray(Image.open({image!r}).convert('L'), np.float32) / 255  # grey in [0, 1]
if np.median(g) > 0.5: g = 1 - g  # dark ink on light paper -> bright ink on black, as in MNIST
g = np.clip((g - np.median(g)) / (g.max() - np.median(g)), 0, 1)  # background 0, ink up to 1
rows, cols = np.nonzero(g > 0.2); g = g[rows.min():rows.max() + 1, cols.min():cols.max() + 1]  # crop to the ink
h, w = (max(1, round(n * 20 / max(g.shape))) for n in g.shape)  # fit into 20x20, keeping the aspect ratio
g = np.clip(np.asarray(Image.fromarray(g).resize((w, h), Image.LANCZOS)), 0, 1)
rows, cols = np.indices(g.shape); mass = g.sum()  # centre of mass at (14, 14) in 28x28, as in MNIST
top, left = int(np.clip(14.5 - (rows * g).sum() / mass, 0, 28 - h)), int(np.clip(14.5 - (cols * g).sum() / mass, 0, 28 - w))
x = np.zeros((1, 28, 28, 1), np.float32); x[0, top:top + h, left:left + w, 0] = g
session = ort.InferenceSession({model!r})
probabilities = session.run(None, {{session.get_inputs()[0].name: x}})[0]  # outputs: probabilities, features
print(int(probabilities.argmax()))
'''


def onnx_snippet(file_name: str) -> str:
    """Python source that reads the digit in ``digit.png`` (`SNIPPET_IMAGE`) with an exported model.

    The image may be a dark digit on light paper or a light digit on a dark background (a
    drawing), one digit on an evenly lit, opaque background; the program prints the digit (0-9).

    Args:
        file_name: the model file's name or path as the reader saved it, e.g. ``"default-cnn.onnx"``;
            written into the source as a quoted string literal.

    Returns:
        The program's source: lines separated by ``"\\n"``, none after the last (as ``st.code``
        shows it).

    Raises:
        ValueError: ``file_name`` is not a non-empty string.
    """
    if not isinstance(file_name, str) or not file_name.strip():
        raise ValueError(f"Expected the model file's name, such as 'default-cnn.onnx', got {file_name!r}.")
    return _TEMPLATE.format(image=SNIPPET_IMAGE, model=file_name).rstrip("\n")


_FIVE_LINES = '''\
import numpy as np, onnxruntime as ort
from PIL import Image
x = np.asarray(Image.open({image!r}).convert('L').resize((28, 28)), np.float32)[None, :, :, None] / 255
session = ort.InferenceSession({model!r})
print(int(session.run(None, {{session.get_inputs()[0].name: x}})[0].argmax()))'''


def onnx_snippet_mnist(file_name: str) -> str:
    """Five lines of Python that read an MNIST-style image (a 28x28 white digit on black, centred as
    MNIST's are) in ``digit.png`` (`SNIPPET_IMAGE`) with an exported model and print the digit.

    Args:
        file_name: the model file's name or path, e.g. ``"default-cnn.onnx"``.

    Returns:
        The program's source, no newline after the last line.

    Raises:
        ValueError: ``file_name`` is not a non-empty string.
    """
    if not isinstance(file_name, str) or not file_name.strip():
        raise ValueError(f"Expected the model file's name, such as 'default-cnn.onnx', got {file_name!r}.")
    return _FIVE_LINES.format(image=SNIPPET_IMAGE, model=file_name)
