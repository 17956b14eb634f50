"Grad-CAM: shapes and range at every layer, placement on the input, overlays, and that a trained Net's maps find the evidence"
import subprocess, sys, numpy as np, pytest, torch
import torch.nn.functional as F
from pathlib import Path
from PIL import Image
from fastcifar.gradcam import DEFAULT_LAYER, LAYERS, _upsample, colorize, gradcam, overlay
from fastcifar.model import Net, layer_table

ROOT = Path(__file__).resolve().parents[1]
COLOURS = np.array([(2., -1., -1.), (-1., 2., -1.), (-1., -1., 2.), (2., 2., -1.)], np.float32)  # red, green, blue, yellow
P = 10  # patch side in pixels

def patches(n, rng, k=1):
    "(x, classes, masks) of `n` noise images with `k` flat patches of distinct colours (k None: 0 to 2 an image), apart"
    x = rng.normal(0, 0.3, (n, 3, 32, 32)).astype(np.float32)  # already 'normalised': the Net takes it as is
    ys, ms = np.full((n, 2), -1), np.zeros((n, 2, 32, 32), bool)
    for i in range(n):
        kk = rng.integers(0, 3) if k is None else k
        ys[i, :kk] = rng.choice(4, kk, replace=False)
        while True:
            at = rng.integers(0, 32-P, (kk, 2))
            if kk < 2 or (np.abs(at[0] - at[1]) >= P + 2).any(): break
        for j, (r, c) in enumerate(at):
            x[i, :, r:r+P, c:c+P] = COLOURS[ys[i, j]][:, None, None]
            ms[i, j, r:r+P, c:c+P] = True
    return torch.from_numpy(x), ys, ms

def inside(h, m): return np.array([a[b].mean() for a, b in zip(h, m)])

@pytest.fixture(scope='module')
def trained():
    "A fresh Net(dropout=0) trained with plain torch to say which colours of patch an image holds (~15 s on one CPU thread)"
    # Multi-label (sigmoid per colour, 0 to 2 patches an image), not softmax over one patch: with one patch always there,
    # a net may learn one colour as "none of the others", whose evidence (and Grad-CAM) is rightly everywhere else.
    torch.manual_seed(0); rng = np.random.default_rng(0)
    m = Net(dropout=0)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for _ in range(150):
        x, y, _ = patches(16, rng, k=None)
        target = torch.from_numpy((y[:, :, None] == np.arange(4)).any(1)).float()
        loss = F.binary_cross_entropy_with_logits(m(x)[:, :4], target); opt.zero_grad(); loss.backward(); opt.step()
    return m.eval()

@pytest.mark.parametrize('layer', ['c1.conv1', 'c1.dilated', 'c2.squeeze', 'c2.dw', 'c3.strided', 'c4.conv2', 'out.conv'])
@pytest.mark.parametrize('bs', [1, 5])
def test_shape_dtype_range(layer, bs):
    torch.manual_seed(0)
    m, x = Net(), torch.randn(bs, 3, 32, 32)
    h = gradcam(m, x, layer)
    assert h.shape == (bs, 32, 32) and h.dtype == np.float32 and np.isfinite(h).all()
    assert h.min() >= 0 and h.max() <= 1
    assert all(np.isclose(a.max(), 1) or a.max() == 0 for a in h)  # each map scaled by its own max
    assert m.training and all(p.grad is None for p in m.parameters())  # mode restored, no gradients left behind

def test_layers_and_targets():
    assert LAYERS == [r['name'] for r in layer_table() if r['op'] == 'conv'] and DEFAULT_LAYER in LAYERS
    m, x = Net().eval(), torch.randn(3, 3, 32, 32)
    pred = m(x).argmax(1)
    np.testing.assert_array_equal(gradcam(m, x), gradcam(m, x, target=pred))  # default: the predicted class
    assert gradcam(m, x, 'c3.strided', target=7).shape == (3, 32, 32)
    with pytest.raises(ValueError, match='3 images'): gradcam(m, x, target=[1, 2])
    with pytest.raises(ValueError, match='out of range'): gradcam(m, x, target=10)
    with torch.inference_mode(): assert gradcam(m, x).shape == (3, 32, 32)  # works inside a caller's inference mode

@pytest.mark.parametrize('name', ['c3.pool', 'c4.gap', 'conv1', 'c9.conv', ''])
def test_bad_layer(name):
    with pytest.raises(ValueError, match=r"unknown layer .*one of the Net's conv layers: c1\.conv1, c1\.conv2"):
        gradcam(Net(), torch.randn(1, 3, 32, 32), name)

def test_zero_map_stays_zero():
    m = Net().eval()
    with torch.no_grad(): m.out.conv.weight.zero_()  # no logit depends on anything: all gradients are 0
    h = gradcam(m, torch.randn(2, 3, 32, 32), 'c3.strided')
    assert np.isfinite(h).all() and (h == 0).all()

@pytest.mark.parametrize('layer,cell,pixel', [('c3.strided', (3, 7), (12, 20)), ('c4.conv2', (1, 3), (11, 19)),
                                               ('c1.dilated', (5, 10), (9, 14)), ('c1.conv1', (2, 28), (3, 29))])
def test_maps_sit_where_their_cells_look(layer, cell, pixel):
    "A hot cell peaks on the input pixel at its receptive field's centre (unpadded convs: not a plain stretch)"
    n = next(r['size'] for r in layer_table() if r['name'] == layer)
    cam = torch.zeros(1, 1, n, n); cam[0, 0, cell[0], cell[1]] = 1
    up = _upsample(cam, layer, 32)[0]
    assert divmod(int(up.argmax()), 32) == pixel and float(up.max()) == pytest.approx(1, abs=1e-5)

def test_overlay():
    rng = np.random.default_rng(0)
    img, heat = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), rng.random((32, 32), dtype=np.float32)
    for size, shape in ((None, (32, 32, 3)), (256, (256, 256, 3)), ((120, 80), (80, 120, 3))):
        o = overlay(img, heat, 0.5, size)
        assert o.shape == shape and o.dtype == np.uint8
    np.testing.assert_array_equal(overlay(img, heat, 0, 64), np.asarray(Image.fromarray(img).resize((64, 64), Image.Resampling.NEAREST)))
    cold, hot = overlay(img, np.zeros((32, 32)), 1.), overlay(img, np.ones((8, 8)), 1., 32)  # heat of any size
    assert (cold == colorize(np.zeros(1))[0]).all() and (hot == colorize(np.ones(1))[0]).all()
    assert tuple(colorize(np.zeros(1))[0]) == (0, 0, 128) and tuple(colorize(np.ones(1))[0]) == (128, 0, 0)  # jet

def test_imports_no_fastai():
    code = "import sys, fastcifar.gradcam; assert not any(m.startswith('fastai') for m in sys.modules)"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]

def test_trained_net_finds_the_patch(trained):
    "On held-out images, the heat inside the one patch is over twice the heat outside it, for most images"
    x, y, m = patches(100, np.random.default_rng(1))
    with torch.no_grad(): assert (trained(x)[:, :4].argmax(1).numpy() == y[:, 0]).mean() > 0.9  # the task is learnt
    found = {}
    for layer in ('c2.conv', 'c3.strided'):  # mid layers: c1's maps see too little, c4's cells see the whole image
        h = gradcam(trained, x, layer, target=y[:, 0])
        found[layer] = (inside(h, m[:, 0]) > 2*inside(h, ~m[:, 0])).mean()
    assert max(found.values()) >= 0.8, found

def test_heat_follows_the_class(trained):
    "Two patches of different classes: each class's map is on its own patch (over twice the other's), and only when trained"
    x, y, m = patches(100, np.random.default_rng(2), k=2)
    def score(net):
        ha, hb = (gradcam(net, x, 'c3.strided', target=y[:, j]) for j in (0, 1))
        return ((inside(ha, m[:, 0]) > 2*inside(ha, m[:, 1])) & (inside(hb, m[:, 1]) > 2*inside(hb, m[:, 0]))).mean()
    assert score(trained) >= 0.9
    torch.manual_seed(0)
    assert score(Net(dropout=0).eval()) < 0.2  # the same test of an untrained Net fails: it can fail

def test_confident_mistakes():
    "Only wrong predictions, the most confident first, at most n; their predicted class and its probability"
    from fastcifar.gradcam import confident_mistakes
    probs = torch.tensor([[.9, .1], [.2, .8], [.3, .7], [.6, .4], [.05, .95]])
    class Pred:
        def probs(self, x): assert len(x) == len(probs); return probs
    y = np.array([0, 0, 1, 1, 0])  # wrong: 1 (0.8 for class 1), 3 (0.6 for class 0), 4 (0.95 for class 1)
    idx, yhat, conf = confident_mistakes(Pred(), np.zeros((5, 32, 32, 3), np.uint8), y, n=2)
    assert idx.tolist() == [4, 1] and yhat.tolist() == [1, 1] and np.allclose(conf, [.95, .8])
    assert confident_mistakes(Pred(), np.zeros((5, 32, 32, 3), np.uint8), y)[0].tolist() == [4, 1, 3]
