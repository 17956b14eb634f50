"""CIFAR-10 as fastai DataLoaders: a DataBlock with the seed's albumentations augmentation."""
import cv2, random, numpy as np, albumentations as A
from pathlib import Path
from PIL import Image
from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, ItemTransform, IndexSplitter, ItemGetter,
                               Normalize, PILImage)
from .sources import CLASSES, load_cifar, to_rgb32

__all__ = ['STATS', 'MEAN_FILL', 'SIZE', 'CifarImage', 'seed_augs', 'AlbumentationsTransform', 'cifar_items',
           'cifar_block', 'cifar_dls']

STATS = ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])  # the seed's normalisation (mean, std)
MEAN_FILL = tuple(round(255*m) for m in STATS[0])             # cutout fill: the data set mean, in pixels
SIZE = 32

class CifarImage(PILImage):
    "A 32x32 RGB image: from a decoded uint8 array, or any image file (made RGB, resized to 32x32)."
    @classmethod
    def create(cls, fn: Path|str|np.ndarray|Image.Image, **kwargs):
        if isinstance(fn, np.ndarray): return cls(Image.fromarray(fn))
        return cls(to_rgb32(fn if isinstance(fn, Image.Image) else Image.open(fn)))

def seed_augs(p=0.5, seed=None):
    "The seed's augmentation: flip, shift-scale-rotate (reflect-101 borders), one 16x16 cutout filled with the mean."
    aug = A.Compose([
        A.HorizontalFlip(p=p),
        # The seed's ShiftScaleRotate(0.0625, 0.1, 7) as albumentations 2.x's Affine: one scale for both axes,
        # and the reflect-101 border that albumentations 1.x used by default (2.x changed it to constant 0).
        A.Affine(translate_percent={'x': (-0.0625, 0.0625), 'y': (-0.0625, 0.0625)}, scale=(0.9, 1.1),
                 keep_ratio=True, rotate=(-7, 7), border_mode=cv2.BORDER_REFLECT_101, p=p),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(16, 16), hole_width_range=(16, 16),
                        fill=MEAN_FILL, p=p),
    ])
    # albumentations' `Compose(seed=...)` seeds every transform with the same seed, so the flip, affine and cutout
    # draw correlated numbers; one shared stream seeded once keeps them independent (and resumable).
    if seed is not None: aug.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return aug

class AlbumentationsTransform(ItemTransform):
    "Apply an albumentations pipeline to the image of an (image, label) item, on the training split only."
    split_idx, order = 0, 2
    def __init__(self, aug): self.aug = aug
    def encodes(self, x):
        img, *rest = x
        return (CifarImage(Image.fromarray(self.aug(image=np.asarray(img))['image'])), *rest)


def cifar_items(data, frac=1.0):
    "(image array, class name) items of a `Cifar`, train then test, and the test indices; `frac` keeps every 1/frac-th."
    step = max(1, round(1/frac))
    tr = [(x, data.classes[y]) for x, y in zip(data.x_train[::step], data.y_train[::step])]
    te = [(x, data.classes[y]) for x, y in zip(data.x_test[::step], data.y_test[::step])]
    return tr + te, range(len(tr), len(tr)+len(te))

def cifar_block(valid_idx, augment=True, seed=None):
    "The DataBlock: decoded images and class names, the test set as validation, augmentation on train only."
    return DataBlock(blocks=(ImageBlock(cls=CifarImage), CategoryBlock(vocab=list(CLASSES))),
                     get_x=ItemGetter(0), get_y=ItemGetter(1), splitter=IndexSplitter(valid_idx),
                     item_tfms=[AlbumentationsTransform(seed_augs(seed=seed))] if augment else [],
                     batch_tfms=[Normalize.from_stats(*STATS)])

def cifar_dls(source=None, bs=128, workers=0, augment=True, frac=1.0, seed=None, device=None, data=None):
    "CIFAR-10 `DataLoaders` from any source `load_cifar` takes (or an already loaded `data`)."
    data = data if data is not None else load_cifar(source)
    items, valid_idx = cifar_items(data, frac)
    dls = cifar_block(valid_idx, augment, seed).dataloaders(items, bs=bs, num_workers=workers, device=device)
    dls.source = data.source
    return dls
