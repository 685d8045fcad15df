"""max |converted - original| per head family, seeded random weights: ``python -m benchmarks.exactness`` (run from the repo root)."""
import torch, torchvision
from fcnclassify import convert
from fcnclassify.network.seeded import BatchNormHead, FlattenInClassifier, ViewSize, build, randomize
from torch import nn
rows = []
def run(name, model, size=(224, 224), mean=False):
    fcn = convert(model, cells="activation" if mean else "window")
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model(x); b = fcn(x)
        b = b.mean((2, 3)) if mean else b[..., 0, 0]
    rows.append((name, f"{size[0]}x{size[1]}", fcn.kind, a.abs().max().item(), (a - b).abs().max().item()))
for n in ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]:
    run(n, build(getattr(torchvision.models, n)))
run("alexnet, 8 classes", build(torchvision.models.alexnet, num_classes=8))
m = build(torchvision.models.vgg16); m.classifier[-1] = randomize(nn.Linear(4096, 3)); run("vgg16, 3-class head", m)
run("hand-written VGG, Flatten in classifier", randomize(FlattenInClassifier()))
run("hand-written VGG, x.view(x.size(0), -1)", randomize(ViewSize()))
run("fine-tuned head with BatchNorm1d", randomize(BatchNormHead()))
for n, size in [("resnet18", (256, 320)), ("resnet18", (480, 352)), ("mobilenet_v2", (480, 352)), ("efficientnet_b0", (288, 224)), ("densenet121", (256, 320))]:
    run(n + " (CAM, spatial mean)", build(getattr(torchvision.models, n)), size, mean=True)
for n in ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"]:  # one window
    run(n + " (window cell)", build(getattr(torchvision.models, n)))
print("| model | input | head kind | max abs logit | max abs (converted - original) |")
print("| --- | --- | --- | --- | --- |")
for r in rows: print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.3g} | {r[4]:.2e} |")
