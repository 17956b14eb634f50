"Any image as a person sees it, made a 32x32 RGB array: the one reader of training data and inference."
import numpy as np
from PIL import Image, ImageOps

__all__ = ['SIZE', 'to_rgb32', 'read_rgb']

SIZE = 32  # CIFAR-10's side: the Net's input

def _to_8bit(im):
    "A 16-bit or 32-bit integer ('I;16', 'I') or float ('F') image as an 8-bit 'L' image, scaled by its range."
    # PIL's own convert('RGB') clips these to 0-255: a 16-bit image turns almost all white, a float one black
    a = np.asarray(im)
    if im.mode == 'F':
        a = a.astype(np.float64)
        finite = a[np.isfinite(a)]
        lo, hi = (0., 1.) if finite.size and finite.min() >= 0 and finite.max() <= 1 else (finite.min(), finite.max()) if finite.size else (0., 1.)
        a = (np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo) - lo)/max(hi - lo, 1e-12)
    else: a = a.astype(np.float64)/(65535. if a.max(initial=0) <= 65535 and a.min(initial=0) >= 0 else max(float(a.max()), 1.))
    return Image.fromarray(np.clip(a*255 + 0.5, 0, 255).astype(np.uint8), 'L')

def to_rgb32(im, size=SIZE):
    "`im` as a `size`x`size` RGB PIL image: EXIF orientation applied, any mode to RGB, any size resized (bilinear)."
    im = ImageOps.exif_transpose(im)  # a photo is seen upright, as its viewer shows it
    if im.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F'): im = _to_8bit(im)
    if im.mode != 'RGB': im = im.convert('RGB')  # L, P, RGBA, CMYK, ...: alpha dropped
    return im if im.size == (size, size) else im.resize((size, size), Image.Resampling.BILINEAR)

def read_rgb(src, size=SIZE):
    "uint8 (size,size,3) RGB array of an image file, PIL image or HWC/HW array, made as the training data was."
    if isinstance(src, np.ndarray):
        if src.dtype == np.uint8 and src.shape == (size, size, 3): return src
        src = Image.fromarray(src)
    if isinstance(src, Image.Image): return np.asarray(to_rgb32(src, size))
    with Image.open(src) as im: return np.asarray(to_rgb32(im, size))
