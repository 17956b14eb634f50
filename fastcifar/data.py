"""CIFAR-10 as fastai DataLoaders: a DataBlock with the seed's augmentation, run by albumentations per item or per batch."""
import cv2, os, random, numpy as np, albumentations as A
import torch
from functools import wraps
# fastai.vision.data, not fastai.vision.all: .all (through fastai.vision.augment, .models and .learner) imports
# torchvision, whose package import loads its models, ops and torch._dynamo, for nothing fastcifar uses: 3 s of every
# import of this module on a 2-core CPU (a training run still loads torch._dynamo when torch builds its optimizer).
# fastai.vision.data registers show_batch for images; the rest of what .all gave is restored below, on first use.
from fastai.vision.data import (DataBlock, TransformBlock, CategoryBlock, Categorize, ItemTransform, IndexSplitter,
                               IntToFloatTensor, Normalize, TensorImage, TensorCategory, TfmdDL, fa_collate)
from fastai.learner import Learner
from fastai.interpret import Interpretation
from .sources import CLASSES, DataError, load_cifar
from .images import SIZE
from .augment import batch_augs, AlternatingFlip

__all__ = ['STATS', 'MEAN_FILL', 'SIZE', 'AUGS', 'SEED_AUG', 'aug_spec', 'albumentations_pipeline', 'GetImage', 'GetLabel', 'LabelIndex', 'seed_augs', 'AlbumentationsTransform', 'StackedDL', 'FLIPS', 'HOLDOUT', 'cifar_items', 'Items',
           'cifar_block', 'cifar_dls']

def _with_vision(f):
    "`f`, importing fastai.vision.learner when first called."
    @wraps(f)
    def _f(*args, **kwargs):
        import fastai.vision.learner  # noqa: F401 (registers the image versions)
        return f(*args, **kwargs)
    return _f

# fastai registers the image versions of `learn.show_results()` and `interp.plot_top_losses()` in fastai.vision.learner,
# which imports torchvision: this module imports it on their first call instead, so both work on any Learner of these
# DataLoaders as they would after `from fastai.vision.all import *`.
for _cls, _name in ((Learner, 'show_results'), (Interpretation, 'plot_top_losses')):
    setattr(_cls, _name, _with_vision(getattr(_cls, _name)))

STATS = ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])  # the seed's normalisation (mean, std)
MEAN_FILL = tuple(round(255*m) for m in STATS[0])             # cutout fill: the data set mean, in pixels

# The seed's augmentation as data; every executor reads these. The seed called, with p=0.5 each: HorizontalFlip,
# ShiftScaleRotate(shift 0.0625, scale 0.1, rotate 7) and CoarseDropout ("16x16 holes"), albumentations unpinned.
# readme: its README's words as albumentations 1.x ran such calls: one 16x16 hole of the mean colour, reflect-101
#         borders, one scale for both axes.
# albu2:  the same calls under albumentations 2.x, which ignores CoarseDropout's 1.x keywords (max_holes, max_height,
#         fill_value, ...) and falls back to its defaults, and whose ShiftScaleRotate is an Affine with constant-0
#         borders and independent x/y scales (keep_ratio=False). tests/test_data.py holds both to the library's calls.
AUGS = dict(
    readme=dict(flip=0.5,              # probability of a horizontal flip
                affine=0.5,            # probability of the shift-scale-rotate
                shift=0.0625,          # translation, fraction of the side, each axis uniform in +-shift
                scale=(0.9, 1.1),      # zoom range
                same_scale=True,       # one zoom for both axes (False: x and y drawn independently)
                rotate=7,              # degrees, uniform in +-rotate
                border='reflect101',   # pixels outside the image: 'reflect101' (cv2's BORDER_REFLECT_101) or 'constant' (0)
                cutout=0.5,            # probability of the cutout
                holes=(1, 1),          # number of holes, inclusive range
                hole=(16, 16),         # hole side: ints are pixels (inclusive range), floats a fraction of the side
                fill=MEAN_FILL),       # hole colour, pixels (RGB)
    albu2=dict(flip=0.5, affine=0.5, shift=0.0625, scale=(0.9, 1.1), same_scale=False, rotate=7, border='constant',
               cutout=0.5, holes=(1, 2), hole=(0.1, 0.2), fill=0),  # hole sides int(32*U(0.1, 0.2)): 3-6 px
    # not the seed's: flip and a whole-pixel translation with reflect-101 borders on every image (reflect padding and a
    # random crop, as fast CIFAR-10 trainers augment), no zoom, rotation or hole; shifts int(U(-4, 4)): -3..3 pixels
    translate=dict(flip=0.5, affine=1., shift=0.125, scale=(1., 1.), same_scale=True, rotate=0, border='reflect101',
                   cutout=0., holes=(1, 1), hole=(16, 16), fill=MEAN_FILL),  # --cutout N: one NxN hole of the mean
)
SEED_AUG = 'albu2'  # the default (`--recipe seed`): its curves are the closer to the seed's published table

def aug_spec(aug=SEED_AUG, cutout=None):
    "The settings of augmentation `aug` (a name of `AUGS`); `cutout` if given: one `cutout`-pixel square hole (0: none)."
    if aug not in AUGS: raise ValueError(f"augmentation {aug!r}: unknown; choose {' or '.join(AUGS)}")
    spec = dict(AUGS[aug])
    if cutout is not None: spec.update(cutout=spec['cutout'] if cutout else 0., holes=(1, 1), hole=(cutout, cutout))
    return spec

class _Direct:
    "Call `_tfm` straight, skipping fasttransform's per-call type dispatch (~15 us a call, 5 calls an item)."
    # Safe only for item transforms that take the whole (image, label) tuple and have one `encodes`.
    def __call__(self, x, split_idx=None, **kwargs):
        return x if self.split_idx is not None and split_idx != self.split_idx else self._tfm(x)

class GetImage(_Direct, ItemTransform):
    "The (32,32,3) uint8 array of an (image, label) item as a CHW `TensorImage` (a view: no copy, no PIL)."
    def _tfm(self, o): return torch.from_numpy(np.asarray(o[0])).permute(2, 0, 1).as_subclass(TensorImage)
    def encodes(self, o): return self._tfm(o)

_BORDERS = dict(reflect101=cv2.BORDER_REFLECT_101, constant=cv2.BORDER_CONSTANT)

def albumentations_pipeline(spec, seed=None):
    "`spec` (see `aug_spec`) as an albumentations pipeline: flip, affine, cutout; `seed` fixes its random stream."
    sh, r = spec['shift'], spec['rotate']
    aug = A.Compose([
        A.HorizontalFlip(p=spec['flip']),
        A.Affine(translate_percent={'x': (-sh, sh), 'y': (-sh, sh)}, scale=spec['scale'], keep_ratio=spec['same_scale'],
                 rotate=(-r, r), border_mode=_BORDERS[spec['border']], fill=0, p=spec['affine']),
    ] + ([A.CoarseDropout(num_holes_range=spec['holes'], hole_height_range=spec['hole'], hole_width_range=spec['hole'],
                          fill=spec['fill'], p=spec['cutout'])] if spec['cutout'] else []))
    # albumentations' `Compose(seed=...)` seeds every transform with the same seed, so the flip, affine and cutout
    # draw correlated numbers; one shared stream seeded once keeps them independent (and resumable).
    if seed is not None: aug.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return aug

def seed_augs(p=0.5, seed=None, cutout=None, aug=SEED_AUG):
    "The seed's augmentation `aug` with every component at probability `p`, as an albumentations pipeline."
    spec = aug_spec(aug, cutout)
    return albumentations_pipeline({**spec, 'flip': p, 'affine': p, 'cutout': p if spec['cutout'] else 0.}, seed)

class GetLabel(_Direct, ItemTransform):
    "The class name of an (image, label) item."
    def _tfm(self, o): return o[1]
    def encodes(self, o): return o[1]

class LabelIndex(_Direct, Categorize):
    "fastai's `Categorize` (vocab, decodes, `dls.vocab`) with its encoding called straight: no type dispatch per item."
    # one TensorCategory a class, made once and handed out for every item of that class (collation copies it into the
    # batch): building a fastai tensor subclass per item was a third of the batch executor's data time
    def _tfm(self, o):
        c = self.__dict__.setdefault('_made', {})
        if (t := c.get(o)) is None: t = c[o] = TensorCategory(self.vocab.o2i[o])
        return t

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
        # Each worker is one thread of work: OpenCV's own pool (a thread a core) only splits each 32x32 warp into
        # slivers, and N workers x N cores threads oversubscribe a many-core machine (albumentations' docs advise
        # cv2.setNumThreads(0) in DataLoader workers; fastai's worker init sets torch's threads to 1 only).
        cv2.setNumThreads(0)
        self._pid, seed = os.getpid(), torch.initial_seed() % 2**32
        self.aug.set_random_state(np.random.default_rng(seed), random.Random(seed))


class StackedDL(TfmdDL):
    "fastai's `TfmdDL`; where no per-item transform runs on its split, a batch is one index into its items stacked once."
    # fastai reads a batch item by item (`Datasets.__getitem__`, its type pipelines, then collation: ~15 us an item, half
    # of the batch executor's data time and more than its augmentation). Without `after_item`/`before_batch` work on this
    # split, a batch is just its items collated, so the items are collated once (an epoch's worth, on first iteration,
    # kept on the dataset for every loader that shares it) and each batch indexes that. Same batches, same types, same
    # order and random draws: the type transforms must be deterministic, as fastcifar's are (GetImage, LabelIndex).
    # `alt_flip` (an `augment.AlternatingFlip`, training split): mirrors each batch's images by their indices and `epoch`
    # (set by `callbacks.LoaderEpoch`); the only place where a batch's item indices are known.
    alt_flip, epoch = None, 0
    def _per_item(self):
        split = getattr(self.dataset, 'split_idx', None)
        return [f for p in (self.after_item, self.before_batch) for f in p.fs if f.split_idx in (None, split)]
    def stacked(self):
        "The dataset's items collated once (None where batches are read item by item)."
        ds = self.dataset
        if not self.indexed or self.prebatched or ds is None or not len(ds) or self._per_item(): return None
        if (st := ds.__dict__.get('_stacked')) is None: st = ds.__dict__['_stacked'] = fa_collate([ds[i] for i in range(len(ds))])
        return st
    def before_iter(self):
        super().before_iter()
        self.stacked()  # in the main process: DataLoader workers inherit it rather than stacking their own
    def create_batches(self, samps):
        if (st := self.stacked()) is None:
            if self.alt_flip is not None: raise ValueError('alternating flips need stacked batches: no per-item transform on the training split')
            yield from super().create_batches(samps); return
        for b in self.chunkify(samps):
            i = torch.as_tensor(b)
            x, *rest = (t[i] for t in st)
            yield (x if self.alt_flip is None else self.alt_flip(x, i, self.epoch), *rest)

def _subset(y, frac, split, seed=0):
    "Sorted indices of a class-balanced `frac` of labels `y`: round(frac*n) images of each class, drawn with `seed`."
    if frac >= 1: return np.arange(len(y))
    rng, keep = np.random.default_rng(seed), []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = round(frac*len(idx))
        if k < 1: raise DataError(f'--frac {frac} keeps no {split} image of class {CLASSES[c]} ({len(idx)} images); use a larger --frac')
        keep.append(rng.choice(idx, k, replace=False))
    return np.sort(np.concatenate(keep))

HOLDOUT = 0.1  # the validation split carved from the training images: 5,000 of 50,000 (500 a class), seeded

def cifar_items(data, frac=1.0, valid='test'):
    "(image array, class name) items, train then validation, and the validation indices; `frac` of each class (seeded)."
    # valid: 'test', the test set (as the seed did); 'holdout', a fixed HOLDOUT of the training images, the test set
    # left unseen, for choosing settings. The subsets' seeds are fixed: runs of any random seed see the same images.
    if valid not in ('test', 'holdout'): raise DataError(f"--valid {valid}: unknown; choose test or holdout")
    xt, yt, xv, yv = data.x_train, data.y_train, data.x_test, data.y_test
    if valid == 'holdout':
        ho = _subset(yt, HOLDOUT, 'training', seed=1)
        rest = np.setdiff1d(np.arange(len(yt)), ho)
        xt, yt, xv, yv = xt[rest], yt[rest], xt[ho], yt[ho]
    tr, va = _subset(yt, frac, 'training'), _subset(yv, frac, 'validation' if valid == 'holdout' else 'test')
    tr = [(xt[i], data.classes[yt[i]]) for i in tr]
    va = [(xv[i], data.classes[yv[i]]) for i in va]
    return Items(tr + va), range(len(tr), len(tr)+len(va))

class Items(list):
    "A list of (image array, class name) items that prints as its length."
    # `DataBlock.datasets` formats its source into a message even when not verbose (`pv(f"Collecting items from
    # {source}", verbose)`); a plain list (or fastcore's `L`) of 60,000 arrays printed in full took 35 s of every
    # training start on a 2-core AVX2 CPU, quiet (and more beside other work).
    def __repr__(self): return f'Items({len(self)} (image, class) pairs)'

_EXECUTORS, FLIPS = ('albumentations', 'batch'), ('random', 'alternate')

def cifar_block(valid_idx, augment=True, seed=None, cutout=None, aug=SEED_AUG, executor='albumentations', flip='random'):
    "The DataBlock: decoded images and class names, the test set as validation, augmentation on train only."
    # executor: 'albumentations' runs the augmentation per item on uint8 arrays (CPU, in the workers); 'batch' runs
    # it per batch on the batch's device (`augment.BatchAug`), on the [0,1] floats before Normalize.
    # flip 'alternate': the loader mirrors the images (`StackedDL.alt_flip`, set by `cifar_dls`), the batch executor not
    if executor not in _EXECUTORS: raise ValueError(f"executor {executor!r}: unknown; choose {' or '.join(_EXECUTORS)}")
    if flip not in FLIPS: raise ValueError(f"flip {flip!r}: unknown; choose {' or '.join(FLIPS)}")
    if flip == 'alternate' and executor != 'batch': raise ValueError('alternating flips need the batch executor (--aug batch)')
    spec = aug_spec(aug, cutout) if augment and aug is not None else None
    if spec and flip == 'alternate': spec['flip'] = 0.
    item = [AlbumentationsTransform(albumentations_pipeline(spec, seed))] if spec and executor == 'albumentations' else []
    batch = [batch_augs(spec, seed)] if spec and executor == 'batch' else []
    # Items are decoded arrays: one cheap transform makes the tensor, no PIL round trip per item and epoch
    images = TransformBlock(batch_tfms=IntToFloatTensor)
    labels = CategoryBlock(vocab=list(CLASSES))
    labels.type_tfms = [LabelIndex(vocab=list(CLASSES))]
    images.item_tfms = labels.item_tfms = []  # both already tensors: no per-item ToTensor (type dispatch on each element)
    return DataBlock(blocks=(images, labels), dl_type=StackedDL,
                     get_x=GetImage(), get_y=GetLabel(), splitter=IndexSplitter(valid_idx),
                     item_tfms=item, batch_tfms=batch + [Normalize.from_stats(*STATS)])

def cifar_dls(source=None, bs=128, workers=0, augment=True, frac=1.0, seed=None, device=None, data=None, cutout=None,
              aug=SEED_AUG, executor='albumentations', valid='test', flip='random', flip_seed=None):
    "CIFAR-10 `DataLoaders` from any source `load_cifar` takes (or an already loaded `data`); `valid`: see `cifar_items`."
    # flip: 'random' (each image, each epoch, as the augmentation draws) or 'alternate' (`augment.AlternatingFlip`: each
    # image's first flip drawn with `flip_seed`, default `seed`, then mirrored every other epoch; `callbacks.LoaderEpoch`
    # tells the loader the epoch). Processes of one run must share `flip_seed`: an image meets a different one each epoch.
    data = data if data is not None else load_cifar(source)
    items, valid_idx = cifar_items(data, frac, valid)
    dls = cifar_block(valid_idx, augment, seed, cutout, aug, executor, flip).dataloaders(items, bs=bs, num_workers=workers, device=device)
    dls.train.drop_last = False  # the seed's 391 steps an epoch: the last, partial batch is trained on too
    if flip == 'alternate' and augment and aug is not None:
        dls.train.alt_flip = AlternatingFlip(len(dls.train_ds), aug_spec(aug)['flip'], seed if flip_seed is None else flip_seed)
    dls.source = data.source
    return dls
