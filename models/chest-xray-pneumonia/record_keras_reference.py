#!/usr/bin/env python3
"""Records the Keras model's own outputs on the package's 16 labelled images, once.

This is the reference `convert.py --check` compares the ONNX conversion against. It needs
TensorFlow, so it is not part of set-up; it was run once in a throw-away virtual environment:

    python3 -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu pandas pillow scipy
    /tmp/tf/bin/python models/chest-xray-pneumonia/record_keras_reference.py \
        --wheel pneumonia_model_package-0.3.0-py3-none-any.whl \
        > models/chest-xray-pneumonia/keras-reference.json

Preprocessing is the package's own (`dataset_preprocessor.image_resizing_and_dataset_creation`):
ImageDataGenerator with Xception's `preprocess_input`, 150x150, nearest-neighbour resize, RGB.
"""

import argparse
import contextlib
import datetime
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile

PACKAGE_MODEL = "pneumonia_model_package/trained_models/pneumonia_xception_model_val-acc_0.861.keras"
PACKAGE_IMAGES = "pneumonia_model_package/datasets/pneumonia-data/val/"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True, help="pneumonia_model_package-0.3.0 wheel")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Plain kernels: the reference should not depend on oneDNN's reordered arithmetic.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import keras
    import numpy as np
    import pandas as pd
    import tensorflow as tf
    from tensorflow.keras.applications.xception import preprocess_input
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    wheel_sha256 = hashlib.sha256(open(args.wheel, "rb").read()).hexdigest()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(args.wheel) as wheel:
        model_path = os.path.join(tmp, "model.keras")
        with open(model_path, "wb") as f:
            f.write(wheel.read(PACKAGE_MODEL))
        names = sorted(
            n[len(PACKAGE_IMAGES):]
            for n in wheel.namelist()
            if n.startswith(PACKAGE_IMAGES) and n.endswith(".jpeg")
        )
        paths = []
        for name in names:
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(wheel.read(PACKAGE_IMAGES + name))
            paths.append(path)

        model = keras.models.load_model(model_path)
        # Exactly the package's preprocessing (config.yml: img_size 150, batch_size 32).
        generator = ImageDataGenerator(preprocessing_function=preprocess_input)
        with contextlib.redirect_stdout(sys.stderr):  # it prints "Found 16 ..."
            flow = generator.flow_from_dataframe(
                pd.DataFrame({"image": paths}),
                target_size=(150, 150),
                batch_size=32,
                x_col="image",
                y_col=None,
                class_mode=None,
                shuffle=False,
            )
        batch = np.concatenate([flow[i] for i in range(len(flow))]).astype(np.float32)
        logits = model.predict(batch, verbose=0)

    images = []
    for name, tensor, row in zip(names, batch, logits):
        images.append(
            {
                "file": name,
                "label": "NORMAL" if name.startswith("NORMAL") else "PNEUMONIA",
                "input_sha256": hashlib.sha256(tensor.tobytes()).hexdigest(),
                "logits": [float(v) for v in row],
                "softmax_pneumonia": float(tf.nn.softmax(row).numpy()[1]),
            }
        )
    json.dump(
        {
            "what": "Keras outputs of pneumonia_xception_model_val-acc_0.861.keras on the 16 images "
            "in pneumonia-model-package 0.3.0 datasets/pneumonia-data/val, with the package's "
            "own preprocessing (input NHWC float32, 150x150x3, x/127.5-1, nearest resize)",
            "wheel_sha256": wheel_sha256,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "recorded": datetime.date.today().isoformat(),
            "images": images,
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
