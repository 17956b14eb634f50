import numpy as np, pytest, torch, albumentations as A
from fastcifar.data import (STATS, MEAN_FILL, AUGS, AlbumentationsTransform, GetImage, aug_spec, albumentations_pipeline,
                           cifar_dls, cifar_items, seed_augs, StackedDL)
from fastcifar.sources import CLASSES, DataError, load_cifar
from fastcifar.synthetic import synthetic_arrays

def test_dls_counts_classes_shapes(tiny_tgz):
    dls = cifar_dls(tiny_tgz, bs=16, seed=0)
    assert (len(dls.train_ds), len(dls.valid_ds)) == (200, 50)
    assert list(dls.vocab) == list(CLASSES)
    xb, yb = dls.train.one_batch()
    assert xb.shape == (16, 3, 32, 32) and xb.dtype == torch.float32 and yb.shape == (16,) and yb.dtype == torch.int64
    xv, yv = dls.valid.one_batch()
    assert xv.shape == (16, 3, 32, 32)
    # normalised with the seed's statistics: undoing it gives back the uint8 test images exactly
    data = load_cifar(tiny_tgz)
    mean, std = torch.tensor(STATS[0]).view(1, 3, 1, 1), torch.tensor(STATS[1]).view(1, 3, 1, 1)
    raw = ((xv.cpu()*std + mean)*255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(raw, data.x_test[:16])
    assert [dls.vocab[i] for i in yv] == [CLASSES[i] for i in data.y_test[:16]]

def test_labels_follow_the_items(tiny_tgz):
    dls = cifar_dls(tiny_tgz, bs=16, seed=0)
    data = load_cifar(tiny_tgz)
    for i in (0, 57, 199):
        x, y = dls.train_ds[i]
        assert np.array_equal(x.permute(1, 2, 0).numpy(), data.x_train[i]) and dls.vocab[y] == CLASSES[data.y_train[i]]

def test_labels_encode_and_decode_as_fastai_categorize(tiny_tgz):
    "The label transform is fastai's Categorize without its per-item dispatch: same tensors, same decoding."
    from fastai.vision.all import Categorize, ToTensor
    from fastcifar.data import LabelIndex
    ref, fast = Categorize(vocab=list(CLASSES)), LabelIndex(vocab=list(CLASSES))
    for c in CLASSES:
        assert fast(c) == ref(c) and type(fast(c)) is type(ref(c)) and fast.decode(fast(c)) == c
    with pytest.raises(KeyError): fast('unicorn')
    dls = cifar_dls(tiny_tgz, bs=16, seed=0)
    assert not any(isinstance(t, ToTensor) for t in dls.train.after_item.fs)  # items are tensors already
    assert [y for _, y in dls.valid.decode_batch(dls.valid.one_batch(), max_n=3)] == [CLASSES[i] for i in load_cifar(tiny_tgz).y_test[:3]]
    # one label tensor a class is handed out for every item: a batch is a copy, so changing it changes no later label
    dls.train.one_batch()[1].fill_(9)
    served = next(t for t in dls.train.dataset.tls[1].tfms.fs if isinstance(t, LabelIndex))
    assert served._made and [int(served(c)) for c in CLASSES] == list(range(10))

class _ItemByItem(StackedDL):
    "fastai's own reading: every batch item by item."
    def stacked(self): return None

@pytest.mark.parametrize('executor', ['batch', 'albumentations'])
def test_stacked_batches_are_fastais_item_by_item(tiny_tgz, executor):
    "A batch indexed from the stacked items is the batch fastai reads item by item: values, types, order, draws."
    from fastai.vision.all import set_seed
    def two_epochs(cls):
        set_seed(5)
        dls = cifar_dls(tiny_tgz, bs=16, seed=3, executor=executor, cutout=8)
        for dl in dls.loaders: dl.__class__ = cls
        return [list(dl) for _ in range(2) for dl in dls.loaders], [dl.stacked() is not None for dl in dls.loaders]
    (fast, used), (ref, _) = two_epochs(StackedDL), two_epochs(_ItemByItem)
    # the batch executor's training split and every validation split have no per-item work: stacked; the
    # albumentations executor's training split augments each item: read item by item
    assert used == [executor == 'batch', True]
    assert [len(e) for e in fast] == [13, 4, 13, 4]  # 200 and 50 images in batches of 16, the last partial
    for ef, er in zip(fast, ref):
        for bf, br in zip(ef, er):
            assert [type(t) for t in bf] == [type(t) for t in br] and all(torch.equal(a, b) for a, b in zip(bf, br))
    assert not torch.equal(fast[0][0][0], fast[2][0][0])  # a second epoch reshuffles and redraws

def test_stacked_batches_read_no_item_and_are_copies(tiny_tgz, monkeypatch):
    from fastai.data.core import Datasets
    dls = cifar_dls(tiny_tgz, bs=16, seed=0, executor='batch')
    first = list(dls.valid)
    def no_item(self, i): raise AssertionError('an item was read one by one')
    monkeypatch.setattr(Datasets, '__getitem__', no_item)
    first[0][0].fill_(0); first[0][1].fill_(9)  # a batch is a copy: changing it changes no later batch
    again = list(dls.valid)
    assert [len(b[0]) for b in again] == [16, 16, 16, 2] and again[0][1].tolist() == load_cifar(tiny_tgz).y_test[:16].tolist()
    assert dls.valid.stacked() is dls.valid.new().stacked()  # a new loader on the same dataset shares the stack
    monkeypatch.undo()
    # DataLoader workers read the same batches from the stack made before they start
    w = cifar_dls(tiny_tgz, bs=16, seed=0, executor='batch', workers=2)
    assert all(torch.equal(a[0].cpu(), b[0].cpu()) and torch.equal(a[1], b[1]) for a, b in zip(list(w.valid), list(dls.valid)))

def test_frac_is_the_fraction_of_every_class_seeded():
    from fastcifar.sources import Cifar
    x, y, xt, yt = synthetic_arrays(10, 4)
    c = Cifar(x, y, xt, yt, CLASSES, 'syn')
    for frac, ntr, nte in ((0.7, 7, 3), (0.6, 6, 2), (0.5, 5, 2), (1.0, 10, 4)):  # per class; round(0.7*4) = 3
        items, valid = cifar_items(c, frac=frac)
        labels = [l for _, l in items]
        assert len(items) == 10*(ntr + nte) and list(valid) == list(range(10*ntr, 10*(ntr + nte)))
        assert all(labels[:10*ntr].count(k) == ntr and labels[10*ntr:].count(k) == nte for k in CLASSES)
    a, b = cifar_items(c, 0.5)[0], cifar_items(c, 0.5)[0]
    assert all(np.array_equal(p[0], q[0]) for p, q in zip(a, b))  # the same subset every time
    with pytest.raises(DataError, match='--frac 0.01 keeps no training image of class airplane'): cifar_items(c, 0.01)

class _Unprintable(np.ndarray):
    def __repr__(self): raise AssertionError('an image array was printed')

def test_building_the_loaders_prints_no_image(monkeypatch):
    "fastai's DataBlock formats its source into a message, verbose or not: the items print as their count, not 60,000 arrays"
    from fastcifar.sources import Cifar
    x, y, xt, yt = synthetic_arrays(10, 4)
    c = Cifar(x.view(_Unprintable), y, xt.view(_Unprintable), yt, CLASSES, 'syn')
    items, _ = cifar_items(c)
    assert repr(items) == 'Items(140 (image, class) pairs)' and isinstance(items[0][0], _Unprintable)
    for executor in ('albumentations', 'batch'):
        dls = cifar_dls(data=c, bs=16, seed=0, executor=executor)
        xb, yb = dls.one_batch()
        assert xb.shape == (16, 3, 32, 32) and len(dls.train_ds) == 100 and len(dls.valid_ds) == 40

def _only(aug, i):
    "The augmentation with only its i-th transform, always applied."
    t = aug.transforms[i]; t.p = 1.
    return A.Compose([t])

@pytest.mark.parametrize('size', [16, 8])  # 16: the seed's
def test_cutout_is_one_square_hole_of_the_mean(size):
    aug = _only(seed_augs(seed=0, aug='readme', cutout=None if size == 16 else size), 2)
    img = np.zeros((32, 32, 3), np.uint8)
    for _ in range(50):
        out = aug(image=img)['image']
        hole = (out == np.array(MEAN_FILL, np.uint8)).all(-1)
        ys, xs = np.nonzero(hole)
        assert hole.sum() == size*size and ys.max() - ys.min() == size-1 and xs.max() - xs.min() == size-1
        assert (out[~hole] == 0).all()
    assert MEAN_FILL == (125, 123, 114)

def test_cutout_0_leaves_flip_and_affine_only():
    assert [type(t).__name__ for t in seed_augs(cutout=0).transforms] == ['HorizontalFlip', 'Affine']
    assert [type(t).__name__ for t in seed_augs().transforms] == ['HorizontalFlip', 'Affine', 'CoarseDropout']

def test_flip_and_affine_keep_shape_and_dtype():
    rng = np.random.default_rng(0)
    img = rng.integers(50, 256, (32, 32, 3), dtype=np.uint8)  # no dark pixels: a constant-0 border would show
    flip, aff = _only(seed_augs(seed=0, aug='readme'), 0), _only(seed_augs(seed=0, aug='readme'), 1)
    f = flip(image=img)['image']
    assert f.shape == img.shape and f.dtype == np.uint8 and np.array_equal(f, img[:, ::-1])
    outs = [aff(image=img)['image'] for _ in range(20)]
    assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)
    assert sum(not np.array_equal(o, img) for o in outs) == 20
    # reflect-101 borders, as the seed's albumentations 1.x ShiftScaleRotate: no constant-0 corners appear
    assert all(o.min() >= 40 for o in outs)

def test_affine_is_the_seeds_shift_scale_rotate():
    aff = seed_augs(aug='readme').transforms[1]
    assert aff.border_mode == 4  # cv2.BORDER_REFLECT_101
    assert aff.rotate == (-7, 7) and aff.scale['x'] == aff.scale['y'] == (0.9, 1.1) and aff.keep_ratio
    assert aff.translate_percent == {'x': (-0.0625, 0.0625), 'y': (-0.0625, 0.0625)}

def test_transform_runs_only_on_the_training_split():
    tfm = AlbumentationsTransform(seed_augs(p=1., seed=0))
    x = GetImage()((np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8), 'cat'))
    item = (x, 3)
    assert tfm(item, split_idx=1) is item
    out = tfm(item, split_idx=0)
    assert out[1] == 3 and out[0].shape == (3, 32, 32) and not torch.equal(out[0], x)

def test_validation_items_come_out_unchanged(tiny_tgz):
    dls = cifar_dls(tiny_tgz, bs=16, seed=0)
    data = load_cifar(tiny_tgz)
    for i in range(0, 50, 7):
        x, y = dls.valid.after_item(dls.valid_ds[i])
        assert np.array_equal(x.permute(1, 2, 0).numpy(), data.x_test[i])

def test_augmentations_share_one_stream_and_are_seeded():
    a, b = seed_augs(seed=3), seed_augs(seed=3)
    assert all(t.py_random is a.py_random and t.random_generator is a.random_generator for t in a.transforms)
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert all(np.array_equal(a(image=img)['image'], b(image=img)['image']) for _ in range(10))

def test_read_rgb_any_mode(tmp_path):
    from fastcifar.images import read_rgb as read_image
    from PIL import Image
    Image.new('RGBA', (64, 48), (10, 20, 30, 128)).save(tmp_path/'a.png')
    Image.new('L', (32, 32), 77).save(tmp_path/'b.jpg')
    a, b = read_image(tmp_path/'a.png'), read_image(tmp_path/'b.jpg')
    assert a.shape == b.shape == (32, 32, 3) and a.dtype == np.uint8 and (a == [10, 20, 30]).all()
    assert abs(int(b[..., 0].mean()) - 77) <= 1 and (b[..., 0] == b[..., 1]).all()

def test_real_data_smoke(shared_data):
    dls = cifar_dls(shared_data, bs=128)
    assert (len(dls.train_ds), len(dls.valid_ds)) == (50_000, 10_000)
    assert len(dls.train) == 391 and list(dls.vocab) == list(CLASSES)

def _seeded(aug, seed):
    aug.set_random_state(np.random.default_rng(seed), __import__('random').Random(seed)); return aug

def test_albu2_is_the_seeds_calls_under_albumentations_2():
    # the seed's 1.x-style calls, run by the installed albumentations 2.x: its keywords for CoarseDropout are ignored
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        calls = A.Compose([A.HorizontalFlip(p=0.5), A.ShiftScaleRotate(shift_limit=0.0625, scale_limit=0.1, rotate_limit=7, p=0.5),
                           A.CoarseDropout(max_holes=1, max_height=16, max_width=16, min_holes=1, min_height=16, min_width=16,
                                           fill_value=MEAN_FILL, p=0.5)])
    ours = albumentations_pipeline(aug_spec('albu2'))
    x, *_ = synthetic_arrays(10, 1)
    a, b = _seeded(calls, 7), _seeded(ours, 7)
    for img in list(x)*4: assert np.array_equal(a(image=img)['image'], b(image=img)['image'])

def test_albu2_holes_border_and_scales():
    spec = aug_spec('albu2')
    assert (spec['holes'], spec['hole'], spec['fill'], spec['border'], spec['same_scale']) == ((1, 2), (0.1, 0.2), 0, 'constant', False)
    cut = _seeded(A.Compose([albumentations_pipeline({**spec, 'flip': 0, 'affine': 0, 'cutout': 1.}).transforms[2]]), 0)
    img, counts, sides = np.full((32, 32, 3), 200, np.uint8), [], set()
    for _ in range(400):
        holes = cut.transforms[0].get_params_dependent_on_data({'shape': img.shape}, {'image': img})['holes']
        counts.append(len(holes)); sides |= {int(h) for h in holes[:, 2] - holes[:, 0]} | {int(h) for h in holes[:, 3] - holes[:, 1]}
        out = cut(image=img)['image']
        assert set(np.unique(out)) <= {0, 200} and 9 <= (out == 0).all(-1).sum() <= 2*36
    assert set(counts) == {1, 2} and abs(np.mean(counts) - 1.5) < 0.1 and sides == {3, 4, 5, 6}
    aff = albumentations_pipeline(spec).transforms[1]
    assert aff.border_mode == 0 and not aff.keep_ratio and aff.rotate == (-7, 7) and aff.scale['x'] == aff.scale['y'] == (0.9, 1.1)

def test_cutout_flag_overrides_either_augmentation():
    for aug in AUGS:
        assert aug_spec(aug, 8)['hole'] == (8, 8) and aug_spec(aug, 8)['holes'] == (1, 1) and aug_spec(aug, 0)['cutout'] == 0
        assert aug_spec(aug, 8)['fill'] == AUGS[aug]['fill']
    with pytest.raises(ValueError, match='unknown'): aug_spec('albu1')

def test_holdout_validation_is_carved_from_training_images():
    from fastcifar.sources import Cifar
    x, y, xt, yt = synthetic_arrays(20, 4)
    c = Cifar(x, y, xt, yt, CLASSES, 'syn')
    items, valid = cifar_items(c, valid='holdout')
    tr, va = items[:valid.start], items[valid.start:]
    assert len(tr) == 180 and len(va) == 20 and all([l for _, l in va].count(k) == 2 for k in CLASSES)  # 10% of each class
    seen = {a.tobytes() for a in x}
    assert all(a.tobytes() in seen for a, _ in items) and not {a.tobytes() for a, _ in tr} & {a.tobytes() for a, _ in va}
    assert not {a.tobytes() for a in xt} & {a.tobytes() for a, _ in items}  # the test set is never seen
    again, _ = cifar_items(c, valid='holdout')
    assert all(np.array_equal(p[0], q[0]) for p, q in zip(items, again))  # fixed, whatever the run's random seed
    with pytest.raises(DataError, match='--valid dev: unknown'): cifar_items(c, valid='dev')

def test_translate_is_flip_and_a_reflect_padded_crop():
    "`translate`: every output is the image (or its mirror) padded by reflect-101 and cropped at a whole-pixel shift of -3..3"
    import cv2
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    crops = {}
    for src in (img, img[:, ::-1]):
        pad = cv2.copyMakeBorder(np.ascontiguousarray(src), 3, 3, 3, 3, cv2.BORDER_REFLECT_101)
        for dy in range(7):
            for dx in range(7): crops[pad[dy:dy+32, dx:dx+32].tobytes()] = (dy - 3, dx - 3)
    aug, seen = seed_augs(seed=0, aug='translate'), set()
    assert [type(t).__name__ for t in aug.transforms] == ['HorizontalFlip', 'Affine']
    for _ in range(1500):  # each corner shift has odds 1/64
        out = aug(image=img)['image']
        assert out.tobytes() in crops
        seen.add(crops[out.tobytes()])
    assert len(seen) == 49  # every shift from -3 to 3 on both axes occurs

def test_a_worker_reseeds_from_torch_and_runs_opencv_single_threaded():
    "In a new process (a DataLoader worker) the augmentation draws from that worker's torch seed, OpenCV on one thread."
    import cv2
    from fastai.vision.all import TensorImage
    before = cv2.getNumThreads()
    item = (TensorImage(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)), 'cat')
    t = AlbumentationsTransform(seed_augs(p=1.0, seed=0))
    def in_worker(seed):
        t._pid = -1; torch.manual_seed(seed)  # as a worker's first call: another pid, torch seeded per worker
        return t._tfm(item)[0]
    try:
        a, b, c = in_worker(1), in_worker(2), in_worker(1)
        assert cv2.getNumThreads() == 1
        assert torch.equal(a, c) and not torch.equal(a, b)
    finally: cv2.setNumThreads(before)

def _orientations(dls, data, epochs):
    "Which training image each served image is, and whether it is mirrored, for each of `epochs`: [{index: mirrored}]."
    mean, std = torch.tensor(STATS[0]).view(1, 3, 1, 1), torch.tensor(STATS[1]).view(1, 3, 1, 1)
    raw = torch.from_numpy(data.x_train).permute(0, 3, 1, 2)
    known = {**{x.numpy().tobytes(): (i, False) for i, x in enumerate(raw)}, **{x.flip(-1).numpy().tobytes(): (i, True) for i, x in enumerate(raw)}}
    assert len(known) == 2*len(raw)  # no image is its own mirror or another's: each served image names one index and side
    out = []
    for e in epochs:
        dls.train.epoch = e
        served = [known[x.numpy().tobytes()] for xb, _ in dls.train for x in ((xb.cpu()*std + mean)*255).round().to(torch.uint8)]
        assert sorted(i for i, _ in served) == list(range(len(raw)))  # every image once an epoch
        out.append(dict(served))
    return out

def test_alternating_flips_mirror_each_image_every_other_epoch(tiny_tgz, monkeypatch):
    from fastcifar.augment import AlternatingFlip
    monkeypatch.setitem(AUGS, 'fliponly', dict(AUGS['readme'], affine=0., cutout=0.))  # flips only: served images are exact
    data = load_cifar(tiny_tgz)
    dls = cifar_dls(data=data, bs=16, seed=3, executor='batch', aug='fliponly', flip='alternate', flip_seed=7)
    eps = _orientations(dls, data, range(4))
    first = AlternatingFlip(200, 0.5, 7).first
    assert [eps[0][i] for i in range(200)] == first.tolist() and 70 <= int(first.sum()) <= 130  # drawn once, seeded, p=0.5
    for a, b in zip(eps, eps[1:]): assert all(a[i] != b[i] for i in range(200))  # each image mirrored every other epoch
    assert eps[2] == eps[0] and eps[3] == eps[1]
    # DataLoader workers (forked each epoch, as a GPU run has them) mirror the same images
    w = cifar_dls(data=data, bs=16, seed=3, executor='batch', aug='fliponly', flip='alternate', flip_seed=7, workers=2)
    assert _orientations(w, data, [0, 1]) == eps[:2]
    # the validation split is never flipped, and random flips (the default) repeat a side from one epoch to the next
    assert dls.valid.alt_flip is None
    rnd = _orientations(cifar_dls(data=data, bs=16, seed=3, executor='batch', aug='fliponly'), data, range(2))
    assert sum(rnd[0][i] == rnd[1][i] for i in range(200)) > 50
    with pytest.raises(ValueError, match='batch executor'): cifar_dls(data=data, bs=16, flip='alternate')
