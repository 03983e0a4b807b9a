#!/usr/bin/python3
"""PyTorch's CPU latency on the nets of exec_bench, as a further reference line beside oneDNN.

    /usr/bin/python3 bench/pytorch_bench.py [--threads 2] [--runs 10] [NET@HxW ...]

Prints one line per net and mode: min and median ms over `runs` timed runs (after two warm-ups).
Modes: "eager" (torch.no_grad, the model as torchvision builds it) and "frozen"
(torch.jit.freeze + optimize_for_inference: BatchNorm folded into the convolutions, oneDNN
layouts where PyTorch picks them), the closer match to what occam's reference executor does.
DnCNN is written out here as the zoo builds it (17 3x3 convolutions of 64 channels, BatchNorm and
ReLU in the middle, grayscale in and out).
"""
import argparse
import statistics
import time

import torch
import torchvision


def dncnn():
    layers = [torch.nn.Conv2d(1, 64, 3, padding=1), torch.nn.ReLU()]
    for _ in range(15):
        layers += [torch.nn.Conv2d(64, 64, 3, padding=1, bias=False), torch.nn.BatchNorm2d(64), torch.nn.ReLU()]
    layers.append(torch.nn.Conv2d(64, 1, 3, padding=1, bias=False))
    return torch.nn.Sequential(*layers)


BUILDERS = {
    "resnet18": (torchvision.models.resnet18, 3),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, 3),
    "dncnn": (dncnn, 1),
}


def time_model(model, x, runs):
    with torch.no_grad():
        for _ in range(2):
            model(x)
        ms = []
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            ms.append((time.perf_counter() - start) * 1e3)
    return min(ms), statistics.median(ms)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("nets", nargs="*",
                        default=["resnet18@224x224", "mobilenet_v2@224x224", "dncnn@512x512", "mobilenet_v2@1024x1024"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, {args.runs} runs")
    for spec in args.nets:
        name, size = spec.split("@")
        h, w = (int(v) for v in size.split("x"))
        build, channels = BUILDERS[name]
        model = build().eval()
        x = torch.rand(1, channels, h, w) * 2 - 1
        with torch.no_grad():
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(model)))
        for mode, m in (("eager", model), ("frozen", frozen)):
            lo, med = time_model(m, x, args.runs)
            print(f"pytorch {name} {h}x{w} {mode}: min {lo:.2f} ms, median {med:.2f} ms")


if __name__ == "__main__":
    main()
