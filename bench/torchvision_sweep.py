#!/usr/bin/python3
"""Brings torchvision's CNNs to occam as a user would: export each to ONNX, run it through
`occam run --compare` on an image, and check the top-5 classes against PyTorch's own.

    /usr/bin/python3 bench/torchvision_sweep.py [--occam PATH] [--out DIR] [--runs N] [--threads T] [MODEL ...]

Weights are torchvision's untrained initialisation (seed 1), so the classes mean nothing, but both
sides see the same weights and the same image (a seeded random 224x224 PNG, 299x299 for
inception_v3, normalised the ImageNet way by both). One line per model: occam's exit status, the two
top-5 lists and whether they agree, then occam's compare line (fused vs reference max relative error,
speed ratio, peak-memory ratio), or occam's error message for a model it cannot import. Exports are
kept in --out (default /tmp/occam-torchvision) and reused. Needs Debian's python3-torch,
python3-torchvision and python3-pil.
"""
import argparse
import os
import subprocess

import numpy as np
import torch
import torchvision
from PIL import Image

MODELS = ["squeezenet1_0", "squeezenet1_1", "densenet121", "mnasnet1_0", "mobilenet_v3_small", "mobilenet_v3_large",
          "efficientnet_b0", "regnet_x_400mf", "regnet_y_400mf", "resnext50_32x4d", "wide_resnet50_2", "resnet34",
          "vgg11_bn", "inception_v3", "shufflenet_v2_x1_0", "efficientnet_v2_s", "convnext_tiny"]
KWARGS = {"inception_v3": {"aux_logits": False, "init_weights": True}, "googlenet": {"aux_logits": False, "init_weights": True}}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--occam", default=os.path.join(os.path.dirname(__file__), "..", "build", "release", "tools", "occam", "occam"))
    parser.add_argument("--out", default="/tmp/occam-torchvision")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("models", nargs="*", default=MODELS)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name in args.models:
        size = 299 if name == "inception_v3" else 224
        image = (np.random.default_rng(7).random((size, size, 3)) * 255).astype(np.uint8)
        png = os.path.join(args.out, f"image{size}.png")
        Image.fromarray(image).save(png)
        torch.manual_seed(1)
        model = getattr(torchvision.models, name)(weights=None, **KWARGS.get(name, {})).eval()
        onnx = os.path.join(args.out, f"{name}.onnx")
        if not os.path.exists(onnx):
            with torch.no_grad():
                torch.onnx.export(model, torch.zeros(1, 3, size, size), onnx + ".partial", opset_version=13,
                                  input_names=["input"], output_names=["logits"])
            os.replace(onnx + ".partial", onnx)
        x = (torch.from_numpy(image).float().div(255).permute(2, 0, 1) - MEAN) / STD
        with torch.no_grad():
            want = [int(i) for i in torch.topk(model(x.unsqueeze(0))[0], 5).indices]
        run = subprocess.run([args.occam, "run", onnx, "--input", png, "--compare", "--runs", str(args.runs),
                              "--threads", str(args.threads)], capture_output=True, text=True)
        lines = (run.stdout + run.stderr).splitlines()
        got = [int(line.split()[1]) for line in lines if line.strip().startswith("class")]
        compare = next((line for line in lines if line.startswith("compare")), "")
        error = next((line for line in lines if line.startswith("occam: error")), "")
        if run.returncode != 0:
            print(f"{name}: exit {run.returncode}; {error or lines[-1:]}", flush=True)
            continue
        verdict = "top-5 equal" if got == want else "top-5 DIFFER"
        print(f"{name}: torch {want}, occam {got}: {verdict}; {compare}", flush=True)


if __name__ == "__main__":
    main()
