"""Attributions with Captum: which pixels made the network say "cat"?

    r = attribute(model, x01, "integrated_gradients")       # target: the predicted class
    r["heatmap"]  float32 (H, W) in [0, 1]     r["overlay"]  uint8 (H, W, 3)
    r["raw"]      float32 (H, W), signed       r["attribution"]  float32 (C, H, W) (Grad-CAM: (1, H, W))

The checkpoint's normalization sits inside a wrapper module (`modelops.Normalized`), so
attributions are taken on, and overlaid on, the raw [0, 1] image. Every call
runs on a private `modelops.analysis_copy` of the model in eval() with gradients on
(even inside `no_grad` / `inference_mode`): Captum's hooks (Grad-CAM's
forward hook, Guided Backprop's ReLU hooks) never touch the shared model, so
threads do not interfere and the model is left exactly as found. Captum only
calls `torch.autograd.grad`, so no parameter `.grad` is ever written.

Heatmaps: gradient methods use sum_c |attribution_c|; Grad-CAM its (ReLU'd)
map; Occlusion the positive part of the output drop. `raw` is the signed sum
over channels (Integrated Gradients: it sums to f(x) - f(baseline)); for
Occlusion the channel mean (the drop in the target logit).

The CAM family comes from pytorch_grad_cam (imported on first use: it is slow to
import), on the same private copy, at the same layer as Grad-CAM
(`default_gradcam_layer` unless `layer=` is given):

    gradcam_pp   Grad-CAM++: channel weights from positive second-order gradient terms (sharper, several objects)
    scorecam     Score-CAM: no gradients; a channel's weight is the target score of the image masked by that
                 channel's upsampled map (one forward pass per channel, `batch_size` at a time)
    layercam     LayerCAM: every position weighted by its own positive gradient (finer detail)
    eigencam     EigenCAM: the first principal component of the layer's maps; class-agnostic (the target is
                 ignored), its sign turned so that the larger part is positive (SVD's sign is arbitrary)
    finercam     Finer-CAM: Grad-CAM of the target's logit minus the `comparisons` classes with the nearest
                 logits (weighted by their probability, times `comparison_weight`): what tells it apart from
                 the classes it is confused with

For these, `cam` is the library's map at the layer's resolution (h', w') before normalisation, ReLU'd, and
`raw` = the heatmap's magnitude its bilinear upsampling to (H, W), as for Grad-CAM; pytorch_grad_cam's own
per-image [0, 1] scaling is not used, so scale="shared" compares magnitudes across images. pytorch_grad_cam
calls `loss.backward()`, which writes `.grad` into the parameters: it runs on a copy whose parameters are
fresh tensors sharing the weights' memory with requires_grad off (the input carries the gradient), so the
shared model's parameters never get a `.grad`, and its hooks are released when the call ends (also on errors).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from captum.attr import (GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients, LayerAttribution,
                         LayerGradCam, NoiseTunnel, Occlusion, Saliency)
from torch import nn
from cnnlib.errors import CNNLibError
from cnnlib import viz
from cnnlib.models.anatomy import default_gradcam_layer
from cnnlib.modelops import Normalized, analysis_copy, as_image01, capture, get_layer, model_device

# Captum announces its (temporary) ReLU hooks on every Guided Backprop call; they are on a private copy.
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations", module="captum")

CAM_METHODS = ("gradcam_pp", "scorecam", "layercam", "eigencam", "finercam")    # through pytorch_grad_cam
METHODS = ["saliency", "integrated_gradients", "smoothgrad", "input_x_gradient", "guided_backprop",
           "gradcam", "guided_gradcam", "occlusion", *CAM_METHODS]
METHOD_LABELS = {"saliency": "Saliency", "integrated_gradients": "Integrated Gradients",
                 "smoothgrad": "SmoothGrad", "input_x_gradient": "Input × Gradient",
                 "guided_backprop": "Guided Backprop", "gradcam": "Grad-CAM",
                 "guided_gradcam": "Guided Grad-CAM", "occlusion": "Occlusion",
                 "gradcam_pp": "Grad-CAM++", "scorecam": "Score-CAM", "layercam": "LayerCAM",
                 "eigencam": "EigenCAM", "finercam": "Finer-CAM"}
LAYER_METHODS = ("gradcam", "guided_gradcam", *CAM_METHODS)

# Every option's default, in one place (the dashboard reads these; `option_defaults` resolves the ones that
# depend on the image size). Units: n_steps = points on the straight path from the baseline (IG);
# nt_samples = noisy copies averaged, stdev = noise std in [0, 1] pixel units (SmoothGrad);
# window / stride = occlusion patch side and step in pixels (None: window = H // 8, at least 2;
# stride = window // 2); baseline = what "absent" means: black, white or the training mean colour;
# batch_size = masked images per forward pass (Score-CAM); comparisons = how many of the classes with the
# nearest logits Finer-CAM compares against, comparison_weight = its alpha (0: plain Grad-CAM).
# internal_batch_size / nt_samples_batch_size None: as many images per backward pass as GRAD_PIXELS allows
# (all 50 IG steps at 32 px; 10 at 224 px, where 50 at once held 1.4 GB more for a resnet18: same result).
METHOD_OPTIONS: dict[str, dict] = {
    "integrated_gradients": {"n_steps": 50, "baseline": "black", "internal_batch_size": None},
    "smoothgrad": {"nt_samples": 25, "stdev": 0.15, "seed": 0, "nt_samples_batch_size": None},
    "occlusion": {"window": None, "stride": None, "baseline": "black", "perturbations_per_eval": 64},
    "scorecam": {"batch_size": 64},
    "finercam": {"comparisons": 3, "comparison_weight": 1.0},
}
BASELINES = ("black", "white", "mean")
GRAD_PIXELS = 512_000      # pixels (images x H x W) per backward pass of IG and SmoothGrad: memory, not result
FORWARD_PIXELS = 1_048_576  # pixels per forward pass of Occlusion's and Score-CAM's masked copies (64 at 32 px,
#                             20 at 224 px, where 64 at once held 1.0 GB more for a resnet18's Score-CAM)


def option_defaults(method: str, input_shape) -> dict:
    """The options `method` runs with by default on images of `input_shape` [C, H, W]."""
    if method not in METHODS:
        raise CNNLibError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    opts = dict(METHOD_OPTIONS.get(method, {}))
    if method == "occlusion":
        h = int(input_shape[1])
        opts["window"] = opts["window"] or max(2, h // 8)
        opts["stride"] = opts["stride"] or max(1, opts["window"] // 2)
    pixels = max(1, int(input_shape[1]) * int(input_shape[2]))
    per_pass, per_forward = max(1, GRAD_PIXELS // pixels), max(1, FORWARD_PIXELS // pixels)
    if method == "occlusion":
        opts["perturbations_per_eval"] = min(opts["perturbations_per_eval"], per_forward)
    if method == "scorecam":
        opts["batch_size"] = min(opts["batch_size"], per_forward)
    if method == "integrated_gradients" and opts["internal_batch_size"] is None and per_pass < opts["n_steps"]:
        opts["internal_batch_size"] = per_pass
    if method == "smoothgrad" and opts["nt_samples_batch_size"] is None and per_pass < opts["nt_samples"]:
        opts["nt_samples_batch_size"] = per_pass
    return opts


class _SeededNoiseTunnel(NoiseTunnel):
    """NoiseTunnel drawing its noise from a private generator: reproducible, and no global RNG shared by threads."""

    def __init__(self, attribution_method, seed: int):
        super().__init__(attribution_method)
        self._seed, self._gens = seed, {}

    def _add_noise_to_input(self, input, stdev, nt_samples_partition):   # overrides Captum's staticmethod
        g = self._gens.get(input.device)
        if g is None:
            g = self._gens[input.device] = torch.Generator(device=input.device).manual_seed(self._seed)
        size = (input.shape[0] * nt_samples_partition,) + tuple(input.shape[1:])
        noise = torch.randn(size, generator=g, device=input.device, dtype=input.dtype) * stdev
        return input.repeat_interleave(nt_samples_partition, dim=0) + noise


def _baseline(x: torch.Tensor, wrapper: Normalized, baseline) -> torch.Tensor | float:
    """'black' (0), 'white' (1), 'mean' (the training mean colour), a number, or a tensor like x."""
    if isinstance(baseline, str):
        if baseline == "black":
            return 0.0
        if baseline == "white":
            return 1.0
        if baseline == "mean":
            return wrapper.mean.expand_as(x).clone()
        raise CNNLibError(f"unknown baseline {baseline!r}; use black, white, mean, a number or a tensor")
    if isinstance(baseline, torch.Tensor):
        return baseline.to(x.device, x.dtype).reshape(x.shape).clone()
    return float(baseline)


def _attribute_one(wrapper: Normalized, image: torch.Tensor, method: str, target, layer: str | None,
                   opts: dict) -> dict:
    """One image (C, H, W) in [0, 1] -> attribution (C', H, W) plus everything `attribute` returns."""
    x = image.unsqueeze(0).to(model_device(wrapper)).clone().requires_grad_()     # (1, C, H, W)
    c, h, w = x.shape[1:]
    with torch.no_grad():
        logits = wrapper(x).float()[0]                                                # (K,)
        probs = torch.softmax(logits, dim=0)
    k = probs.numel()
    t = int(probs.argmax()) if target is None else int(target)
    if not 0 <= t < k:
        raise CNNLibError(f"target class {target} is out of range (the model has {k} classes)")
    out = {"method": method, "target": t, "probs": probs.cpu().numpy().astype(np.float32)}
    if method == "saliency":
        a = Saliency(wrapper).attribute(x, target=t, abs=False)
    elif method == "integrated_gradients":
        a, delta = IntegratedGradients(wrapper).attribute(
            x, baselines=_baseline(x, wrapper, opts["baseline"]), target=t,
            n_steps=int(opts["n_steps"]), internal_batch_size=opts["internal_batch_size"],
            return_convergence_delta=True)
        out["delta"] = float(delta.reshape(-1)[0])       # sum(attr) - (f(x) - f(baseline)), target logit
    elif method == "smoothgrad":
        n = int(opts["nt_samples"])
        a = _SeededNoiseTunnel(Saliency(wrapper), int(opts["seed"])).attribute(
            x, nt_type="smoothgrad", nt_samples=n, stdevs=float(opts["stdev"]),
            nt_samples_batch_size=int(opts["nt_samples_batch_size"] or n), target=t, abs=False)
    elif method == "input_x_gradient":
        a = InputXGradient(wrapper).attribute(x, target=t)
    elif method == "guided_backprop":
        a = GuidedBackprop(wrapper).attribute(x, target=t)
    elif method in CAM_METHODS:
        out["layer"] = layer
        cam = _pytorch_grad_cam(wrapper, x, method, t, layer, logits, opts)                  # (h', w') >= 0
        out["cam"] = cam
        a = LayerAttribution.interpolate(torch.from_numpy(cam)[None, None], (h, w),
                                         interpolate_mode="bilinear")                         # (1, 1, H, W)
    elif method in LAYER_METHODS:
        out["layer"] = layer
        module = get_layer(wrapper.net, layer)
        if method == "gradcam":
            cam = LayerGradCam(wrapper, module).attribute(x, target=t, relu_attributions=True)   # (1, 1, h', w')
            if cam.dim() != 4:
                raise CNNLibError(f"Grad-CAM needs a layer with a spatial output; {layer!r} gives {tuple(cam.shape)}")
            out["cam"] = cam[0, 0].detach().float().cpu().numpy()
            a = LayerAttribution.interpolate(cam, (h, w), interpolate_mode="bilinear")             # (1, 1, H, W)
        else:
            a = GuidedGradCam(wrapper, module).attribute(x, target=t, interpolate_mode="bilinear")
    elif method == "occlusion":
        win, stride = int(opts["window"]), int(opts["stride"])
        a = Occlusion(wrapper).attribute(
            x, sliding_window_shapes=(c, win, win), strides=(c, stride, stride),
            baselines=_baseline(x, wrapper, opts["baseline"]), target=t,
            perturbations_per_eval=int(opts["perturbations_per_eval"]))
    else:
        raise CNNLibError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    a = a.detach()[0].float()                                                          # (C', H, W)
    if method == "occlusion":
        raw = a.mean(0)
        mag = raw.clamp_min(0)
    elif method == "gradcam" or method in CAM_METHODS:
        raw = mag = a[0].clamp_min(0)       # bilinear upsampling of a non-negative map stays non-negative
    else:
        raw, mag = a.sum(0), a.abs().sum(0)
    out.update(attribution=a.cpu().numpy(), raw=raw.cpu().numpy(), magnitude=mag.cpu().numpy())
    return out


def _frozen_copy_parameters(net: nn.Module) -> nn.Module:
    """Give a private copy its own Parameter objects (same memory, requires_grad off): a library that calls
    loss.backward() then writes no .grad into the shared model's parameters (they are never touched)."""
    for m in net.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                m._parameters[name] = nn.Parameter(p.detach(), requires_grad=False)
    return net


def _pytorch_grad_cam(wrapper: Normalized, x: torch.Tensor, method: str, t: int, layer: str,
                      logits: torch.Tensor, opts: dict) -> np.ndarray:
    """One CAM-family map (h', w') float32 >= 0 for target t, from pytorch_grad_cam at `layer`.

    x (1, C, H, W) requires grad (the parameters of `wrapper` do not). The library's map is taken before
    its min-max scaling and cv2 resize (its get_cam_image), so magnitudes stay comparable across images."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, FinerWeightedTarget
    module = get_layer(wrapper.net, layer)
    if method == "finercam":
        cam = pgc.FinerCAM(wrapper, [module], base_method=pgc.GradCAM)
        base = cam.base_cam
        # the classes the model finds most alike: nearest logits to the target's, the target excluded
        near = np.argsort(np.abs(logits.cpu().numpy() - float(logits[t])), kind="stable")
        near = [int(c) for c in near if c != t][:max(int(opts["comparisons"]), 1)]
        targets = [FinerWeightedTarget(t, near, float(opts["comparison_weight"]))]
    else:
        cls = {"gradcam_pp": pgc.GradCAMPlusPlus, "scorecam": pgc.ScoreCAM, "layercam": pgc.LayerCAM,
               "eigencam": pgc.EigenCAM}[method]
        cam = base = cls(wrapper, [module])
        targets = [ClassifierOutputTarget(t)]
        if method == "scorecam":
            base.batch_size = int(opts["batch_size"])
    kept = []
    library_map = base.get_cam_image

    def keep(*args, **kwargs):                # the per-layer map, before scaling: (1, h', w')
        m = library_map(*args, **kwargs)
        kept.append(m)
        return m
    base.get_cam_image = keep
    try:
        cam(x, targets=targets)
    finally:
        base.activations_and_grads.release()  # its forward hooks (on the private copy) go, also on errors
        del base.get_cam_image                # back to the class method
    m = np.nan_to_num(np.asarray(kept[-1][0], np.float32))                              # (h', w')
    if method == "eigencam" and -m.min() > m.max():
        m = -m                                # SVD's sign is arbitrary: make the larger part positive
    return np.maximum(m, 0)


def attribute_many(model: nn.Module, xs, method: str, targets=None, scale: str = "image", layer: str | None = None,
                   alpha: float = 0.5, cmap: str = "jet", clip_percentile: float = 100.0, **opts) -> list[dict]:
    """`attribute` for several images; scale="shared" puts every heatmap on one scale (same method only).

    xs: (N, C, H, W) or a list of (C, H, W) (uint8 or [0, 1]); targets: None or one per image (None = predicted).
    """
    if method not in METHODS:
        raise CNNLibError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    if scale not in ("image", "shared"):
        raise CNNLibError(f"scale must be 'image' or 'shared', not {scale!r}")
    images = [as_image01(x) for x in xs]
    targets = [None] * len(images) if targets is None else list(targets)
    if len(targets) != len(images):
        raise CNNLibError(f"{len(images)} images but {len(targets)} targets")
    defaults = option_defaults(method, images[0].shape if images else [0, 0, 0])
    unknown = set(opts) - {k for o in METHOD_OPTIONS.values() for k in o}
    if unknown:          # another method's options are ignored (one dict can serve every method); typos are not
        raise CNNLibError(f"unknown attribution option {', '.join(sorted(unknown))}; {method}'s options: "
                          f"{', '.join(defaults) or 'none'}")
    opts = {**defaults, **{k: v for k, v in opts.items() if v is not None and k in defaults}}
    with torch.inference_mode(False), torch.enable_grad():      # also inside a caller's no_grad / inference_mode
        net = analysis_copy(model)         # non-inplace activations, one module per call (Guided Backprop)
        if method in CAM_METHODS:
            _frozen_copy_parameters(net)
        if method in LAYER_METHODS:
            layer = layer or default_gradcam_layer(model)
            get_layer(net, layer)
        wrapper = Normalized(net, getattr(model, "meta", None)).eval()
        if method in CAM_METHODS and images:     # pytorch_grad_cam fails obscurely on a non-spatial layer
            with torch.no_grad(), capture(net, [layer]) as store:
                wrapper(images[0][None].to(model_device(net)))
            if not isinstance(store.get(layer), torch.Tensor) or store[layer].dim() != 4:
                raise CNNLibError(f"{METHOD_LABELS[method]} needs a layer with a spatial output (C, h, w); "
                                  f"{layer!r} gives {tuple(getattr(store.get(layer), 'shape', ()))[1:]}")
        results = [_attribute_one(wrapper, im, method, t, layer, opts) for im, t in zip(images, targets)]
    vmax = [_vmax(r["magnitude"], clip_percentile) for r in results]
    if scale == "shared":
        vmax = [max(vmax)] * len(results)
    for r, im, v in zip(results, images, vmax):
        mag = r.pop("magnitude")
        r["heatmap"] = (np.clip(mag / v, 0, 1) if v > 0 else np.zeros_like(mag)).astype(np.float32)
        r["scale"] = float(v)
        r["overlay"] = overlay(im, r["heatmap"], alpha=alpha, cmap=cmap)
    return results


def attribute(model: nn.Module, x01, method: str, target: int | None = None, layer: str | None = None,
              **opts) -> dict:
    """Attribution of one image (C, H, W) in [0, 1] for `target` (default: the predicted class).

    Returns heatmap float32 (H, W) in [0, 1], raw float32 (H, W) (signed, unnormalized), attribution
    float32 (C, H, W) (Grad-CAM: (1, H, W)), overlay uint8 (H, W, 3), target, probs float32 (K,),
    method, scale (the magnitude mapped to 1), and per method: layer + cam (h', w') (Grad-CAM and the
    CAM family), delta (Integrated Gradients' completeness error).
    Options: layer (LAYER_METHODS; default `default_gradcam_layer`), n_steps,
    internal_batch_size, baseline ('black' | 'white' | 'mean' | number | tensor) for IG and Occlusion,
    nt_samples, stdev, seed (SmoothGrad), window, stride, perturbations_per_eval (Occlusion),
    batch_size (Score-CAM), comparisons, comparison_weight (Finer-CAM), alpha, cmap,
    clip_percentile (heatmap scale at that percentile of the magnitude).
    """
    return attribute_many(model, [x01], method, [target], layer=layer, **opts)[0]


def _vmax(mag: np.ndarray, clip_percentile: float) -> float:
    return float(np.percentile(mag, clip_percentile) if clip_percentile < 100 else mag.max())


# -----------------------------------------------------------------------------
# colour

def colormap(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) float32 RGB in [0, 1] (viz.colormap, with 'jet' as the default)."""
    return viz.colormap(values, cmap)


def overlay(image01, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "jet", weighted: bool = False) -> np.ndarray:
    """Blend a heatmap (H, W) in [0, 1] over an image ((C, H, W) / (H, W, C) / (H, W) in [0, 1]) -> uint8 (H, W, 3).

    weighted=True scales the blend by the heatmap, so unimportant pixels show the plain image.
    """
    img = np.asarray(image01.detach().cpu() if isinstance(image01, torch.Tensor) else image01)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)                                   # (C, H, W) -> (H, W, C)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, -1)
    heat = np.asarray(heatmap, np.float32)
    if img.shape[:2] != heat.shape:
        raise CNNLibError(f"image {img.shape[:2]} and heatmap {heat.shape} differ in size")
    a = alpha * (heat[..., None] if weighted else 1.0)
    out = (1 - a) * np.clip(img, 0, 1) + a * colormap(heat, cmap)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
