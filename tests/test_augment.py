import pickle, cv2, numpy as np, pytest, torch
from torch import nn
import torch.nn.functional as F
from albumentations.augmentations.geometric import functional as fg
from fastai.vision.all import IntToFloatTensor, Normalize, TensorImage, TensorCategory
from fastcifar.augment import BatchAug, batch_augs, draw_params, affine_theta, affine_grid, warp, apply_params
from fastcifar.data import AUGS, MEAN_FILL, AlbumentationsTransform, aug_spec, albumentations_pipeline, cifar_dls
from fastcifar.synthetic import synthetic_arrays

_CV2 = dict(reflect101=cv2.BORDER_REFLECT_101, constant=cv2.BORDER_CONSTANT)

def _images():
    "12 synthetic CIFAR-like images and 4 with sharp edges (checkerboard, noise, bright bands at the borders), uint8 HWC."
    x, *_ = synthetic_arrays(2, 1)
    yy, xx = np.mgrid[:32, :32]
    sharp = [((yy//4 + xx//4) % 2 * 255), np.random.default_rng(0).integers(0, 256, (32, 32)), np.where(xx < 3, 255, 0),
             np.where((yy > 28) | (xx > 28), 255, 20)]
    return np.concatenate([x[:12], np.stack(sharp).astype(np.uint8)[..., None].repeat(3, -1)])

def _float(imgs): return torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float()/255

def _cv2_warp(img, p, i, border):
    "albumentations 2.0.8's Affine, by its own helpers, with image `i`'s drawn parameters `p`."
    m = fg.create_affine_transformation_matrix({'x': float(p['tx'][i]), 'y': float(p['ty'][i])}, {'x': 0., 'y': 0.},
                                               {'x': float(p['sx'][i]), 'y': float(p['sy'][i])}, float(p['rot'][i]), fg.center((32, 32)))
    return fg.warp_affine(img, m, cv2.INTER_LINEAR, 0, _CV2[border], (32, 32))

@pytest.mark.parametrize('aug', list(AUGS))
def test_affine_is_albumentations_warp(aug):
    spec = {**aug_spec(aug), 'flip': 0., 'affine': 1., 'cutout': 0.}
    imgs, g = _images(), torch.Generator().manual_seed(0)
    for _ in range(3):
        p = draw_params(spec, len(imgs), gen=g)
        out = apply_params(_float(imgs), p, spec)
        ref8 = _float(np.stack([_cv2_warp(im, p, i, spec['border']) for i, im in enumerate(imgs)]))
        ref32 = _float(np.stack([_cv2_warp(im.astype(np.float32), p, i, spec['border']) for i, im in enumerate(imgs)]))
        d8, d32 = (out - ref8).abs()*255, (out - ref32).abs()*255
        # cv2 on floats: the same sampling (measured max 0.001/255); on uint8 it rounds, so up to half a level (mean ~0.21)
        assert d32.max() < 0.01 and d8.max() <= 0.501 and d8.mean() < 0.25, (d32.max(), d8.max(), d8.mean())
        assert not torch.equal(out, _float(imgs))

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_affine_grid_is_torchs_bit_for_bit(dtype):
    spec = aug_spec('readme')
    p = draw_params(spec, 64, gen=torch.Generator().manual_seed(3))
    th = affine_theta(*(p[k] for k in ('tx', 'ty', 'sx', 'sy', 'rot'))).to(dtype)
    for h, w in ((32, 32), (24, 40)):
        out = affine_grid(th, h, w)
        assert out.dtype == dtype and torch.equal(out, F.affine_grid(th, (64, 3, h, w), align_corners=True))

def test_warp_borders_are_cv2s():
    x = _float(_images())
    # a pure 2-pixel shift: the strip that comes in is the reflected image (101: no repeated edge pixel) or 0
    th = affine_theta(*torch.tensor([[2., 0., 1., 1., 0.]]*len(x)).T)
    r, c = warp(x, th, 'reflect101'), warp(x, th, 'constant')
    assert torch.allclose(r[..., 2:], x[..., :-2], atol=1e-5) and torch.allclose(r[..., :2], x[..., [2, 1]], atol=1e-5)
    assert torch.allclose(c[..., 2:], x[..., :-2], atol=1e-5) and c[..., :2].abs().max() < 1e-5

def _sd_ok(hits, n, p): return abs(hits - n*p) <= 5*(n*p*(1 - p))**.5

def _whole_pixel_shifts(ts, shift):
    "int(U(-s, s)) for a whole number of pixels s = 32*shift: -(s-1)..s-1, 0 twice as likely as each other value."
    s = round(32*shift)
    odds = {v: (2 if v == 0 else 1)/(2*s) for v in range(1 - s, s)}
    assert set(np.unique(ts).tolist()) == set(odds), np.unique(ts)
    assert all(_sd_ok((ts == v).sum(), ts.size, q) for v, q in odds.items())

@pytest.mark.parametrize('aug', list(AUGS))
def test_draws_follow_the_spec(aug):
    spec, n = aug_spec(aug), 20_000
    p = draw_params(spec, n, gen=torch.Generator().manual_seed(1))
    for k in ('flip', 'affine', 'cutout'): assert _sd_ok(p[k].sum().item(), n, spec[k]), k
    r, (lo, hi) = spec['rotate'], spec['scale']
    if r: assert -r <= p['rot'].min() < -0.99*r and r*0.99 < p['rot'].max() <= r
    else: assert (p['rot'] == 0).all()
    for k in ('sx', 'sy'): assert lo <= p[k].min() < lo + 0.01 and hi - 0.01 < p[k].max() <= hi
    if spec['same_scale']: assert torch.equal(p['sx'], p['sy'])
    else: assert abs(np.corrcoef(p['sx'], p['sy'])[0, 1]) < 0.05
    # albumentations truncates the shift to whole pixels: int(U(-s, s)) for s = shift*32 pixels
    for k in ('tx', 'ty'): _whole_pixel_shifts(p[k].numpy(), spec['shift'])
    nh, (y, x, h, w) = p['n'], p['holes'].unbind(-1)
    assert set(nh.tolist()) == set(range(spec['holes'][0], spec['holes'][1] + 1))
    assert (y >= 0).all() and (y + h <= 32).all() and (x >= 0).all() and (x + w <= 32).all() and y.min() == x.min() == 0
    assert ((y + h) == 32).any() and ((x + w) == 32).any()
    if spec['holes'] == (1, 1): assert (h == spec['hole'][0]).all() and (w == spec['hole'][1]).all() and (nh == 1).all()
    else:  # albu2: int(32*U(0.1, 0.2)): 3, 4, 5, 6 with odds 0.8:1:1:0.4; one or two holes, evenly
        assert _sd_ok((nh == 2).sum().item(), n, .5)
        for s in (h, w): assert all(_sd_ok((s == v).sum().item(), s.numel(), q/3.2) for v, q in ((3, .8), (4, 1), (5, 1), (6, .4)))
    p8 = draw_params(aug_spec(aug, 8), 1000, gen=torch.Generator().manual_seed(1))
    assert (p8['holes'][..., 2:] == 8).all() and (p8['n'] == 1).all()

@pytest.mark.parametrize('aug', list(AUGS))
def test_shift_is_distributed_as_albumentations(aug):
    aff = albumentations_pipeline(aug_spec(aug), seed=0).transforms[1]
    c = np.array(fg.center((32, 32)))
    ts = []
    for _ in range(2000):
        m = aff.get_params_dependent_on_data({'shape': (32, 32, 3)}, {})['matrix']
        ts.append(m[:2, 2] - c + m[:2, :2] @ c)  # m = T(c) T(t) R S T(-c)
    _whole_pixel_shifts(np.round(np.array(ts), 6), aug_spec(aug)['shift'])

@pytest.mark.parametrize('aug,cut', [('readme', None), ('readme', 8), ('albu2', 8)])
def test_hole_is_exactly_h_by_w_of_the_fill(aug, cut):
    spec = {**aug_spec(aug, cut), 'flip': 0., 'affine': 0., 'cutout': 1.}
    side, x = spec['hole'][0], torch.full((64, 3, 32, 32), 0.3)
    out = BatchAug(spec, seed=0)(TensorImage(x), split_idx=0)
    # the fill as the pipeline would have it: the uint8 pixel through IntToFloatTensor
    fill = IntToFloatTensor()(TensorImage(torch.tensor(spec['fill'], dtype=torch.uint8).expand(3)[:, None, None]))[:, 0, 0]
    for o in out:
        hole = (o == fill[:, None, None]).all(0)
        ys, xs = hole.nonzero().T
        assert hole.sum() == side*side and ys.max() - ys.min() == xs.max() - xs.min() == side - 1
        assert (o[:, ~hole] == 0.3).all()
    assert (x == 0.3).all()  # the input batch untouched: the hole is filled in place in the output only
    assert MEAN_FILL == (125, 123, 114)

def _batch(n=32): return TensorImage(_float(synthetic_arrays(4, 1)[0][:n]))

def test_seeded_and_resumable():
    x, spec = _batch(), aug_spec('albu2')
    a, b = BatchAug(spec, seed=5), batch_augs(spec, seed=5)
    assert all(torch.equal(a(x, split_idx=0), b(x, split_idx=0)) for _ in range(3))
    st = a.state()
    assert all(isinstance(v, (torch.Tensor, int)) for v in st.values())
    nxt = [a(x, split_idx=0) for _ in range(2)]
    c = BatchAug(spec, seed=99); c.set_state(st)
    assert all(torch.equal(o, c(x, split_idx=0)) for o in nxt)
    d = pickle.loads(pickle.dumps(a))  # an exported Learner pickles its transforms
    assert torch.equal(a(x, split_idx=0), d(x, split_idx=0))
    assert not torch.equal(BatchAug(spec, seed=6)(x, split_idx=0), b(x, split_idx=0))
    torch.manual_seed(0); e = BatchAug(spec)
    torch.manual_seed(0); f = BatchAug(spec)
    assert torch.equal(e(x, split_idx=0), f(x, split_idx=0))

def test_training_split_only_shape_dtype_layout():
    x, aug = _batch(), BatchAug(aug_spec('readme'), seed=0)
    assert aug(x, split_idx=1) is x
    out = aug(x, split_idx=0)
    assert isinstance(out, TensorImage) and out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert sum(not torch.equal(o, i) for o, i in zip(out, x)) > len(x)//2
    cl = BatchAug(aug_spec('readme'), seed=0)(x.contiguous(memory_format=torch.channels_last), split_idx=0)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.allclose(cl, out, atol=1e-6)

@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_cuda_matches_cpu():
    x, spec = _batch(), aug_spec('readme')
    out = BatchAug(spec, seed=0)(TensorImage(x.cuda()), split_idx=0)
    assert out.is_cuda and torch.allclose(out.cpu(), BatchAug(spec, seed=0)(x, split_idx=0), atol=1e-5)

def test_dls_batch_executor(tiny_tgz):
    dls, plain = cifar_dls(tiny_tgz, bs=16, seed=0, executor='batch'), cifar_dls(tiny_tgz, bs=16, augment=False)
    assert [type(t) for t in dls.train.after_batch.fs] == [IntToFloatTensor, BatchAug, Normalize]
    assert not any(isinstance(t, AlbumentationsTransform) for t in dls.train.after_item.fs)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(dls.valid, plain.valid))
    xb, yb = dls.train.one_batch()  # also tells the train pipeline its split (fastai does so as iteration starts)
    assert xb.shape == (16, 3, 32, 32) and xb.dtype == torch.float32 and yb.shape == (16,)
    raw, lbl = TensorImage(torch.stack([dls.train_ds[i][0] for i in range(16)])), TensorCategory(torch.arange(16) % 10)
    tr, va = dls.train.after_batch((raw, lbl)), dls.valid.after_batch((raw, lbl))
    assert torch.equal(va[0], plain.valid.after_batch((raw, lbl))[0]) and torch.equal(tr[1], lbl)
    assert sum(not torch.equal(a, b) for a, b in zip(tr[0], va[0])) > 8
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    F.cross_entropy(m(xb.as_subclass(torch.Tensor)), yb.as_subclass(torch.Tensor)).backward()
    assert all(q.grad is not None and q.grad.isfinite().all() and q.grad.abs().sum() > 0 for q in m.parameters())

def test_executor_default_and_off(tiny_tgz):
    dls = cifar_dls(tiny_tgz, bs=16, seed=0)
    assert [type(t) for t in dls.train.after_batch.fs] == [IntToFloatTensor, Normalize]
    assert any(isinstance(t, AlbumentationsTransform) for t in dls.train.after_item.fs)
    for kw in (dict(augment=False), dict(aug=None)):
        d = cifar_dls(tiny_tgz, bs=16, executor='batch', **kw)
        assert [type(t) for t in d.train.after_batch.fs] == [IntToFloatTensor, Normalize]
        assert not any(isinstance(t, AlbumentationsTransform) for t in d.train.after_item.fs)
    with pytest.raises(ValueError, match='unknown'): cifar_dls(tiny_tgz, executor='kornia')
