"""Grad-CAM (Selvaraju et al. 2017): where in an image a conv layer of the Net sees the evidence for a class.

Inference side only: torch, numpy and the Net's layer table; no fastai (a demo or a deployed predictor stays small).
"""
import threading
import numpy as np, torch
import torch.nn.functional as F
from PIL import Image
from .model import layer_table

__all__ = ['LAYERS', 'DEFAULT_LAYER', 'gradcam', 'colorize', 'overlay', 'confident_mistakes']

LAYERS = [r['name'] for r in layer_table() if r['op'] == 'conv']  # the conv units Grad-CAM can look at, input first
DEFAULT_LAYER = 'c4.conv2'  # the last spatial conv (5x5): the most class-specific maps, the coarsest

def _geometry():
    "{layer: (start, jump)}: the input pixel at the centre of each layer's output cell j is start + j*jump"
    start, jump, out = 0., 1, {}
    for r in layer_table():
        start += ((r['ks']-1)*r['dilation']/2 - r['pad'])*jump; jump *= r['stride']
        out[r['name']] = start, jump
    return out
_GEOM = _geometry()

def _upsample(cam, layer, size):
    "(N,size,size) of (N,1,h,w) maps at `layer`, sampled bilinearly at each input pixel's place in the map"
    # Not a plain resize: the Net's first convs are unpadded, so a map covers only the middle of the input (c3.strided's
    # 10x10 cells sit on pixels 6, 8, ..., 24): stretching it to 32x32 would put the heat up to 8 pixels off.
    start, jump = _GEOM[layer]
    h, w = cam.shape[-2:]
    p = torch.arange(size, dtype=torch.float32, device=cam.device)
    gy, gx = ((p - start)/jump/max(n - 1, 1)*2 - 1 for n in (h, w))  # grid_sample's [-1, 1] corner-aligned coordinates
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), -1).expand(len(cam), -1, -1, -1)
    return F.grid_sample(cam, grid, mode='bilinear', padding_mode='border', align_corners=True)[:, 0]

def _unit(model, layer):
    "The module `layer` ('c1.conv1' ... 'out.conv') of `model`: a whole conv unit (conv, BN, ReLU, Dropout) where it has one"
    if layer not in LAYERS: raise ValueError(f'unknown layer {layer!r}: Grad-CAM needs one of the Net\'s conv layers: {", ".join(LAYERS)}')
    try: return model.get_submodule(layer)
    except AttributeError: raise ValueError(f'the model has no layer {layer!r}: is it a fastcifar Net?') from None

def _targets(target, logits):
    "(N,1) long class indices: `target` (an int, or one per image), else each image's predicted class"
    if target is None: return logits.argmax(1, keepdim=True)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device).flatten()
    if t.numel() == 1: t = t.expand(len(logits))
    if t.numel() != len(logits): raise ValueError(f'{t.numel()} targets for {len(logits)} images: give one class, or one per image')
    if not ((t >= 0) & (t < logits.shape[1])).all(): raise ValueError(f'target out of range: classes are 0 to {logits.shape[1]-1}')
    return t[:, None]

def gradcam(model, x, layer=DEFAULT_LAYER, target=None):
    "float32 (N,H,W) Grad-CAM maps in [0,1] of normalised input `x` (N,3,H,W) at `layer`, for class `target` (default: predicted)"
    m = getattr(model, 'model', model)  # a `SafePredictor` or its bare Net
    unit, acts = _unit(m, layer), []
    # torch's hook, not fastai's `hook_output`: that would import fastai into the inference side. Only this thread's
    # forward pass is recorded: a server may predict with the same model in another thread meanwhile.
    tid = threading.get_ident()
    h = unit.register_forward_hook(lambda mod, inp, out: acts.append(out) if threading.get_ident() == tid else None)
    was_training = m.training
    try:
        m.eval()  # BN's running stats, no dropout: the model as it predicts
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)  # so the activations need grad even if the weights are frozen
            logits = m(x)
            # images are independent in eval mode: the gradient of the sum is each image's own gradient
            a, = acts
            g, = torch.autograd.grad(logits.gather(1, _targets(target, logits)).sum(), a)
    finally: h.remove(); m.train(was_training)
    cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True)).detach()   # (N,1,h,w)
    cam = _upsample(cam.float(), layer, x.shape[-1])
    mx = cam.flatten(1).amax(1).view(-1, 1, 1)
    return (cam / torch.where(mx > 0, mx, torch.ones_like(mx))).clamp_(0, 1).cpu().numpy()

def colorize(heat, cmap='jet'):
    "uint8 (H,W,3) colours of a heat map in [0,1] (matplotlib's colour map, without pyplot)"
    from matplotlib import colormaps
    return (colormaps[cmap](np.clip(heat, 0, 1))[..., :3] * 255 + 0.5).astype(np.uint8)

def overlay(img, heat, alpha=0.5, size=None, cmap='jet'):
    "uint8 (size,size,3) of uint8 HWC `img` blended with the colours of `heat` (any size; `size` None: the image's)"
    img = Image.fromarray(np.asarray(img, dtype=np.uint8))
    wh = (size, size) if isinstance(size, int) else tuple(size) if size else img.size
    # the pixels stay crisp (a 32x32 image is meant to be seen as pixels), the heat map is smooth
    im = np.asarray(img.convert('RGB').resize(wh, Image.Resampling.NEAREST), np.float32)
    h = np.asarray(Image.fromarray(np.asarray(heat, np.float32), 'F').resize(wh, Image.Resampling.BILINEAR))
    return (im*(1-alpha) + colorize(h, cmap).astype(np.float32)*alpha + 0.5).clip(0, 255).astype(np.uint8)

def confident_mistakes(pred, x, y, n=12):
    "(indices, predicted class, its probability) of the `n` images of uint8 (N,32,32,3) `x` with labels `y` (class indices of `pred`) the model gets wrong most confidently"
    conf, yhat = pred.probs(x).max(1)
    wrong = (yhat != torch.as_tensor(y)).nonzero()[:, 0]
    idx = wrong[conf[wrong].argsort(descending=True)[:n]]
    return idx.numpy(), yhat[idx].numpy(), conf[idx].numpy()
