"""CIFAR-10 as fastai DataLoaders: a DataBlock with the seed's albumentations augmentation."""
import cv2, os, random, numpy as np, albumentations as A
import torch
from fastai.vision.all import (DataBlock, TransformBlock, CategoryBlock, ItemTransform, IndexSplitter,
                               IntToFloatTensor, Normalize, TensorImage)
from .sources import CLASSES, load_cifar

__all__ = ['STATS', 'MEAN_FILL', 'SIZE', 'CUTOUT', 'GetImage', 'GetLabel', 'seed_augs', 'AlbumentationsTransform', 'cifar_items',
           'cifar_block', 'cifar_dls']

STATS = ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])  # the seed's normalisation (mean, std)
MEAN_FILL = tuple(round(255*m) for m in STATS[0])             # cutout fill: the data set mean, in pixels
SIZE = 32
CUTOUT = 16                                                   # the seed's cutout: one 16x16 hole

class _Direct:
    "Call `_tfm` straight, skipping fasttransform's per-call type dispatch (~15 us a call, 5 calls an item)."
    # Safe only for item transforms that take the whole (image, label) tuple and have one `encodes`.
    def __call__(self, x, split_idx=None, **kwargs):
        return x if self.split_idx is not None and split_idx != self.split_idx else self._tfm(x)

class GetImage(_Direct, ItemTransform):
    "The (32,32,3) uint8 array of an (image, label) item as a CHW `TensorImage` (a view: no copy, no PIL)."
    def _tfm(self, o): return torch.from_numpy(np.asarray(o[0])).permute(2, 0, 1).as_subclass(TensorImage)
    def encodes(self, o): return self._tfm(o)

def seed_augs(p=0.5, seed=None, cutout=CUTOUT):
    "The seed's augmentation: flip, shift-scale-rotate (reflect-101 borders), one `cutout`-pixel square hole (0: none)."
    aug = A.Compose([
        A.HorizontalFlip(p=p),
        # The seed's ShiftScaleRotate(0.0625, 0.1, 7) as albumentations 2.x's Affine: one scale for both axes,
        # and the reflect-101 border that albumentations 1.x used by default (2.x changed it to constant 0).
        A.Affine(translate_percent={'x': (-0.0625, 0.0625), 'y': (-0.0625, 0.0625)}, scale=(0.9, 1.1),
                 keep_ratio=True, rotate=(-7, 7), border_mode=cv2.BORDER_REFLECT_101, p=p),
    ] + ([A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(cutout, cutout), hole_width_range=(cutout, cutout),
                          fill=MEAN_FILL, p=p)] if cutout else []))
    # albumentations' `Compose(seed=...)` seeds every transform with the same seed, so the flip, affine and cutout
    # draw correlated numbers; one shared stream seeded once keeps them independent (and resumable).
    if seed is not None: aug.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return aug

class GetLabel(_Direct, ItemTransform):
    "The class name of an (image, label) item."
    def _tfm(self, o): return o[1]
    def encodes(self, o): return o[1]

class AlbumentationsTransform(_Direct, ItemTransform):
    "Apply an albumentations pipeline to the image of an (image, label) item, on the training split only."
    split_idx, order = 0, 2
    def __init__(self, aug): self.aug, self._pid = aug, os.getpid()
    def _tfm(self, x):
        if self._pid != os.getpid(): self._reseed()
        img, *rest = x  # img: uint8 CHW TensorImage; albumentations takes HWC numpy
        # plain-tensor views: TensorImage's own ops cost ~10x more per item (__torch_function__ dispatch)
        out = self.aug(image=img.as_subclass(torch.Tensor).permute(1, 2, 0).numpy())['image']
        return (torch.from_numpy(out).permute(2, 0, 1).as_subclass(TensorImage), *rest)
    def encodes(self, x): return self._tfm(x)
    def _reseed(self):
        # A DataLoader worker starts with a copy of the parent's augmentation RNG: without this every worker would
        # draw the same flips, shifts and holes. torch gives each worker its own seed (base seed + worker id).
        self._pid, seed = os.getpid(), torch.initial_seed() % 2**32
        self.aug.set_random_state(np.random.default_rng(seed), random.Random(seed))


def cifar_items(data, frac=1.0):
    "(image array, class name) items of a `Cifar`, train then test, and the test indices; `frac` keeps every 1/frac-th."
    step = max(1, round(1/frac))
    tr = [(x, data.classes[y]) for x, y in zip(data.x_train[::step], data.y_train[::step])]
    te = [(x, data.classes[y]) for x, y in zip(data.x_test[::step], data.y_test[::step])]
    return tr + te, range(len(tr), len(tr)+len(te))

def cifar_block(valid_idx, augment=True, seed=None, cutout=CUTOUT):
    "The DataBlock: decoded images and class names, the test set as validation, augmentation on train only."
    # Items are decoded arrays: one cheap transform makes the tensor, no PIL round trip per item and epoch
    images = TransformBlock(batch_tfms=IntToFloatTensor)
    images.item_tfms = []  # GetImage already gives tensors: no per-item ToTensor
    return DataBlock(blocks=(images, CategoryBlock(vocab=list(CLASSES))),
                     get_x=GetImage(), get_y=GetLabel(), splitter=IndexSplitter(valid_idx),
                     item_tfms=[AlbumentationsTransform(seed_augs(seed=seed, cutout=cutout))] if augment else [],
                     batch_tfms=[Normalize.from_stats(*STATS)])

def cifar_dls(source=None, bs=128, workers=0, augment=True, frac=1.0, seed=None, device=None, data=None, cutout=CUTOUT):
    "CIFAR-10 `DataLoaders` from any source `load_cifar` takes (or an already loaded `data`)."
    data = data if data is not None else load_cifar(source)
    items, valid_idx = cifar_items(data, frac)
    dls = cifar_block(valid_idx, augment, seed, cutout).dataloaders(items, bs=bs, num_workers=workers, device=device)
    dls.source = data.source
    return dls
