"""The reference images and the package's preprocessing, shared by `record_torch_reference.py`
(which feeds torch) and `convert.py --check` / `measure.py` (which feed ONNX Runtime), so both
sides see byte-identical input tensors.

The package (`cheXwhatsApp.lung_segmentation.segmentation_func`) does
`Image.open(p).convert("P")`, torchvision `resize(img, (512, 512))` (Pillow resizes mode P with
NEAREST whatever filter is asked), `to_tensor(img) - 0.5`. From a grey ("L") image, `convert("P")`
keeps the grey values as palette indices, so the input is `grey / 255 - 0.5`, nearest-resized.

DICOM has no such path in the package; ours: the Modality LUT, then the image's own VOI window
(PS3.3 C.11.2.1.2, pydicom `apply_voi_lut`; the full stored range without one) mapped linearly to
0..255, MONOCHROME1 inverted (PS3.3 C.7.6.3.1.2), then the package's path from that "L" image.
"""

import glob
import io
import os

SIZE = 512
REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FETCHED = os.path.join(REPO, "dicom-samples", "fetched")

# (file under dicom-samples/fetched, where it comes from)
DICOM_IMAGES = [
    ("chest_cr_rg1_explicit_le.dcm", "PyPI pydicom-data 1.0.0 RG1_UNCI.dcm: adult PA chest CR"),
    ("tibia_cr_rg3_explicit_le.dcm", "PyPI pydicom-data 1.0.0 RG3_UNCI.dcm: tibia CR (not a chest)"),
]
KERMANY_SOURCE = "PyPI pneumonia-model-package 0.3.0 val (Kermany paediatric chest X-ray JPEG)"


def reference_images():
    """(relative file, source) of every reference image, in a fixed order."""
    images = list(DICOM_IMAGES)
    for path in sorted(glob.glob(os.path.join(FETCHED, "kermany-val", "*", "*.jpeg"))):
        images.append((os.path.relpath(path, FETCHED), KERMANY_SOURCE))
    return images


def dicom_grey(path):
    """The DICOM image as an 8-bit Pillow "L" image: display-ready grey, white = bright."""
    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds).astype("float64")
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        # Linear window onto the stored range [0, 2^BitsStored - 1] (unsigned) ...
        values = apply_voi_lut(values, ds, index=0).astype("float64")
        low, high = 0.0, float(2 ** ds.BitsStored - 1)
        if ds.PixelRepresentation == 1:
            low, high = -(2.0 ** (ds.BitsStored - 1)), 2.0 ** (ds.BitsStored - 1) - 1
    else:
        low, high = float(values.min()), float(values.max())
    # ... which is then spread over 0..255.
    grey = np.clip(np.round((values - low) / max(high - low, 1.0) * 255.0), 0, 255).astype("uint8")
    if ds.PhotometricInterpretation == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey, mode="L")


def open_image(relative):
    """A reference image as the package opens it (`Image.open(p).convert("P")`)."""
    from PIL import Image

    path = os.path.join(FETCHED, relative)
    if relative.endswith(".dcm"):
        return dicom_grey(path).convert("P")
    with open(path, "rb") as f:
        return Image.open(io.BytesIO(f.read())).convert("P")


def package_input(image, size=SIZE):
    """float32 [1, size, size]: the package's resize + `to_tensor(...) - 0.5` for a mode P image."""
    import numpy as np

    resized = image.resize((size, size))  # Pillow: NEAREST for mode P
    x = np.asarray(resized, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    return (x - np.float32(0.5))[None]


def encode_mask(mask):
    """A boolean [H, W] mask as base64(zlib(np.packbits(mask)))."""
    import base64
    import zlib

    import numpy as np

    return base64.b64encode(zlib.compress(np.packbits(mask.astype(bool)).tobytes(), 9)).decode()


def decode_mask(text, shape=(SIZE, SIZE)):
    import base64
    import zlib

    import numpy as np

    bits = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8)
    return np.unpackbits(bits)[: shape[0] * shape[1]].reshape(shape).astype(bool)


def iou(a, b):
    """Intersection over union of two boolean masks; 1.0 when both are empty."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union
