#!/usr/bin/env python3
"""Records the original PyTorch model's lung masks on the reference images, once.

This is the reference `convert.py --check` compares the ONNX conversion against. It needs torch,
so it is not part of set-up; it was run once in a throw-away virtual environment:

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy pillow pydicom
    python3 -m pip download --no-deps --no-binary=:all: cheXwhatsApp==0.1.5 -d /tmp/sdist
    dicom-samples/fetch-chest-cr.sh          # RG1 and RG3 from pydicom-data
    # the 16 Kermany JPEGs: dicom-samples/fetched/kermany-val/ (the pneumonia model's set-up)
    /tmp/torchvenv/bin/python models/chest-lung-segmentation/record_torch_reference.py \
        --sdist /tmp/sdist/cheXwhatsApp-0.1.5.tar.gz \
        > models/chest-lung-segmentation/torch-reference.json

The model is loaded as the package loads it (`torch.load`, `.eval()`) and run as its
`segmentation()` runs it: input `to_tensor(resize(img, 512)) - 0.5`, [1, 1, 512, 512], then
`argmax` over the two logits; class 1 is lung. The package's module imports torchvision, cv2 and
pandas at the top but its classes use none of them, so empty stand-ins are put in their place.
"""

import argparse
import datetime
import hashlib
import json
import os
import sys
import tarfile
import tempfile
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference_images  # noqa: E402

MEMBER_DIR = "cheXwhatsApp-0.1.5/cheXwhatsApp/"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", required=True, help="cheXwhatsApp-0.1.5.tar.gz")
    args = parser.parse_args()

    import numpy as np
    import torch

    sdist_sha256 = hashlib.sha256(open(args.sdist, "rb").read()).hexdigest()
    for name in ("torchvision", "cv2", "pandas"):
        sys.modules.setdefault(name, types.ModuleType(name))
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(args.sdist) as sdist:
        for name in ("lung_segmentation.py", "lung_segmentation.pt"):
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(sdist.extractfile(MEMBER_DIR + name).read())
        sys.path.insert(0, tmp)  # the pickle names its classes `lung_segmentation.*`
        model = torch.load(os.path.join(tmp, "lung_segmentation.pt"), map_location="cpu",
                           weights_only=False)
    model.eval()
    torch.set_num_threads(2)

    images = []
    for relative, source in reference_images.reference_images():
        image = reference_images.open_image(relative)
        x = reference_images.package_input(image)
        # The package's own to_tensor on the same resized image must give the same tensor.
        resized = torch.from_numpy(np.array(image.resize((512, 512)), dtype=np.uint8))
        theirs = resized.to(torch.float32).div(255)[None] - 0.5
        if not torch.equal(theirs, torch.from_numpy(x)):
            sys.exit(f"{relative}: shared preprocessing differs from torchvision's to_tensor")
        with torch.no_grad():
            logits = model(torch.from_numpy(x)[None])
        mask = torch.argmax(torch.log_softmax(logits, dim=1), dim=1)[0].numpy() == 1
        images.append({
            "file": relative,
            "source": source,
            "input_sha256": hashlib.sha256(x.tobytes()).hexdigest(),
            "lung_fraction": float(mask.mean()),
            "mask": reference_images.encode_mask(mask),
        })
        print(f"{relative}: lung fraction {mask.mean():.4f}", file=sys.stderr)
    json.dump({
        "what": "lung masks (argmax of the two logits == 1, 512x512, np.packbits + zlib + base64) "
        "of PyPI cheXwhatsApp 0.1.5 lung_segmentation.pt (PretrainedUNet, eval mode) with the "
        "package's preprocessing (grey / 255 - 0.5, nearest resize to 512x512); input_sha256 is "
        "of the float32 [1, 512, 512] input tensor",
        "sdist_sha256": sdist_sha256,
        "torch": torch.__version__,
        "recorded": datetime.date.today().isoformat(),
        "images": images,
    }, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
