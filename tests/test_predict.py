"Inference: the predict CLI and API, both model formats, any image, bad input, and the weights-only format's safety"
import hashlib, io, json, os, pickle, re, shutil, subprocess, sys, numpy as np, pytest, torch
from pathlib import Path
from PIL import Image
from fastcore.script import anno_parser
from fastcifar.synthetic import synthetic_arrays
from fastcifar.train import train
from fastcifar.export import export
from fastcifar.callbacks import CPUAutocast
from fastcifar.sources import CLASSES
from fastcifar.predict import FORMAT, ModelError, cli, load_model, main, predict, read_rgb

ROOT = Path(__file__).resolve().parents[1]
SHARPEN = 300.  # see `run`
MODES = {'rgb.png': 'RGB', 'grey.png': 'L', 'rgba.png': 'RGBA', 'palette.png': 'P', 'wide.png': 'RGB',
         'photo.jpg': 'RGB', 'grey.jpg': 'L'}

@pytest.fixture(scope='module')
def run(tiny_tgz, tmp_path_factory):
    "A one-epoch run folder with model.pkl, model.safetensors and model.json, and its in-memory Learner."
    out = tmp_path_factory.mktemp('predict')/'run'
    # bf16 on every CPU (emulated where it has none), so that the in-memory Learner carries an autocast callback
    # for `predict` to set aside and restore
    learn = train(tiny_tgz, out, epochs=1, bs=32, show=False, precision='bf16')
    # One epoch leaves near-uniform probabilities (every image ~0.11, differences ~1e-4), which would make the
    # 1e-4 agreement between formats vacuous: sharpen the logits, then export both formats of the same weights.
    with torch.no_grad(): learn.model.out.conv.weight.mul_(SHARPEN)
    export(learn, model_args=dict(dropout=0.05))  # model.pkl, model.safetensors and model.json again, the way training writes them
    return out, learn

@pytest.fixture(scope='module')
def images(tmp_path_factory):
    "A folder of images in every mode and a few sizes, PNG and JPEG; and their paths by name."
    d = tmp_path_factory.mktemp('images')
    x = synthetic_arrays(1, 1, seed=3)[2]  # one image of each class
    ims = {'rgb.png': Image.fromarray(x[0]), 'grey.png': Image.fromarray(x[1]).convert('L'),
           'rgba.png': Image.fromarray(x[2]).convert('RGBA'),
           'palette.png': Image.fromarray(x[3]).convert('P', palette=Image.Palette.ADAPTIVE),
           'wide.png': Image.fromarray(x[4]).resize((100, 70)), 'photo.jpg': Image.fromarray(x[5]).resize((100, 70)),
           'grey.jpg': Image.fromarray(x[6]).convert('L')}
    ims['rgba.png'].putalpha(Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))))
    for n, im in ims.items(): im.save(d/n, **({'quality': 90} if n.endswith('.jpg') else {}))
    return d, {n: d/n for n in sorted(ims)}

def _matrix(preds):
    "(N, classes) probabilities of top-10 `Prediction`s, in CLASSES order"
    m = np.zeros((len(preds), len(CLASSES)))
    for i, p in enumerate(preds):
        assert p.ok, p.error
        for c, q in zip(p.classes, p.probs): m[i, CLASSES.index(c)] = q
    return m

def _cli(capsys, *args, **kw):
    rc = cli(*args, **kw)
    o, e = capsys.readouterr()
    assert 'Traceback' not in e
    return rc, o.splitlines(), e.splitlines()

def _sub(args, cwd):
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'CUDA_VISIBLE_DEVICES': ''}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)

def test_export_safe_writes_weights_and_description(run):
    out, learn = run
    d = json.loads((out/'model.json').read_text())
    assert d['format'] == FORMAT and d['version'] == 2 and d['model'] == 'fastcifar.model:Net'
    assert d['model_args'] == {'dropout': 0.05}  # what rebuilds the Net as it trained
    assert d['classes'] == list(learn.dls.vocab) == list(CLASSES)
    assert d['mean'] == [0.4914, 0.4822, 0.4465] and d['std'] == [0.2023, 0.1994, 0.201]  # data.STATS
    assert d['size'] == 32 and d['scale'] == 255 and d['params'] == 193_280 and d['weights'] == 'model.safetensors'
    assert d['sha256'] == hashlib.sha256((out/'model.safetensors').read_bytes()).hexdigest()
    from safetensors import safe_open
    with safe_open(out/'model.safetensors', 'pt') as f:
        assert json.loads(f.metadata()['fastcifar'])['model'] == d['model']
        assert set(f.keys()) == set(learn.model.state_dict())

def test_fresh_process_other_cwd_learner(run, images, tmp_path):
    "model.pkl loads in a new process that imported only fastcifar, on the CPU, from another folder"
    out, _ = run
    r = _sub(['-m', 'fastcifar.predict', out/'model.pkl', images[0], tmp_path/'missing.png', '--json'], cwd=tmp_path)
    assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
    assert r.stderr.splitlines() == [f'fastcifar.predict: error: no such file or folder: {tmp_path/"missing.png"}',
                                     'fastcifar.predict: error: 1 of 8 images could not be predicted']
    recs = [json.loads(l) for l in r.stdout.splitlines()]
    assert [o['path'] for o in recs[:-1]] == [str(f) for f in images[1].values()] and 'error' in recs[-1]
    ref = load_model(out/'model.json').predict(list(images[1].values()))
    for o, p in zip(recs, ref):
        assert o['class'] == p.label and o['prob'] == pytest.approx(p.prob, abs=1e-4)

def test_fresh_process_other_cwd_safe_imports_no_fastai(run, images, tmp_path):
    out, _ = run
    r = _sub(['-X', 'importtime', '-m', 'fastcifar.predict', out/'model.json', images[0], '--topk', '3'], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not re.search(r'\|\s+fastai\b', r.stderr), 'the weights-only path imported fastai'
    assert not re.search(r'\|\s+torch\._dynamo$', r.stderr, re.M), 'predicting imported torch.compile (2 s a start)'
    lines = [l.split('\t') for l in r.stdout.splitlines()]
    assert [l[0] for l in lines] == [str(f) for f in images[1].values()]
    for l in lines:
        assert len(l) == 7 and all(c in CLASSES for c in l[1::2])
        ps = [float(q) for q in l[2::2]]
        assert ps == sorted(ps, reverse=True) and 0 < sum(ps) <= 1 + 1e-3

def test_formats_agree(run, images):
    "Exported Learner, weights-only (via .json or .safetensors) and the in-memory Learner: same classes and probabilities"
    out, learn = run
    files = list(images[1].values())
    ms = {k: _matrix(load_model(m).predict(files, topk=10))
          for k, m in (('pkl', out/'model.pkl'), ('json', out/'model.json'), ('st', out/'model.safetensors'), ('mem', learn))}
    ref = ms['json']
    assert np.abs(ref - ref.mean(0)).max() > 0.02, 'probabilities hardly vary between images: the check would be vacuous'
    for k, m in ms.items():
        np.testing.assert_allclose(m, ref, atol=1e-4, rtol=0, err_msg=k)
        assert (m.argmax(1) == ref.argmax(1)).all(), k
    assert any(isinstance(cb, CPUAutocast) for cb in learn.cbs)  # predicting in fp32 left the Learner as it was
    # the API: one path, PIL images, a uint8 batch; `predict` loads and predicts in one call
    x = np.stack([read_rgb(f) for f in files])
    assert [p.label for p in predict(out/'model.safetensors', x)] == [CLASSES[i] for i in ref.argmax(1)]
    one = predict(out/'model.json', files[0], topk=2)
    assert len(one) == 1 and one[0].path == str(files[0]) and len(one[0].classes) == 2
    pil = load_model(out/'model.json').predict([Image.open(f) for f in files[:2]])
    assert [p.path for p in pil] == ['<image 0>', '<image 1>'] and [p.label for p in pil] == [CLASSES[i] for i in ref.argmax(1)[:2]]

def test_every_image_mode_preprocessed_as_training_data(run, images):
    out, _ = run
    pred = load_model(out/'model.json')
    for n, f in images[1].items():
        with Image.open(f) as im: assert im.mode == MODES[n], n
        x = read_rgb(f)
        assert x.shape == (32, 32, 3) and x.dtype == np.uint8
        with Image.open(f) as im:  # RGB, then bilinear to 32x32 where the size differs: how the data set is decoded
            ref = im.convert('RGB'); ref = ref if ref.size == (32, 32) else ref.resize((32, 32), Image.Resampling.BILINEAR)
        np.testing.assert_array_equal(x, np.asarray(ref))
        p, = pred.predict(f, topk=10)
        np.testing.assert_allclose(_matrix([p]), _matrix(pred.predict(x[None], topk=10)), atol=1e-6)
    # flip TTA: the mean of the image's and its mirror's probabilities, in both formats
    x = np.stack([read_rgb(f) for f in images[1].values()])
    want = (pred.probs(x) + pred.probs(np.ascontiguousarray(x[:, :, ::-1]))) / 2
    torch.testing.assert_close(pred.probs(x, tta=True), want)
    torch.testing.assert_close(load_model(out/'model.pkl').probs(x, tta=True), want, atol=1e-4, rtol=0)

def test_cli_topk_and_json(run, images, capsys):
    out, _ = run
    rc, o, e = _cli(capsys, str(out/'model.safetensors'), [str(images[0])], topk=3)
    assert rc == 0 and not e and len(o) == len(MODES)
    for l in o:
        f = l.split('\t')
        assert len(f) == 7 and all(c in CLASSES for c in f[1::2]) and all(re.fullmatch(r'[01]\.\d{4}', q) for q in f[2::2])
    rc, o, e = _cli(capsys, str(out/'model.safetensors'), [str(images[0])], topk=2, as_json=True)
    recs = [json.loads(l) for l in o]
    assert rc == 0 and len(recs) == len(MODES)
    for r in recs:
        assert set(r) == {'path', 'class', 'prob', 'topk'} and len(r['topk']) == 2
        assert r['topk'][0] == {'class': r['class'], 'prob': r['prob']} and r['topk'][0]['prob'] >= r['topk'][1]['prob']
    rc, o, e = _cli(capsys, str(out/'model.json'), [str(images[0])], topk=11)
    assert rc == 2 and not o and e == ['fastcifar.predict: error: --topk 11: must be 1 to 10 (the number of classes)']
    a = anno_parser(main).parse_args(['m.json', 'a.png', 'dir', '--topk', '3', '--json', '--tta'])
    assert (a.model, a.images, a.topk, a.json, a.tta, a.allow_module) == (None, ['m.json', 'a.png', 'dir'], 3, True, True, False)
    a = anno_parser(main).parse_args(['a.png', '--model', 'm.json'])  # --model NAME|PATH, or the first argument as before
    assert (a.model, a.images) == ('m.json', ['a.png'])

def _bad_models(out, d):
    "(model path, words its error must contain) for broken, truncated and foreign model files"
    pkl, st, js = ((out/f'model.{e}').read_bytes() for e in ('pkl', 'safetensors', 'json'))
    def w(name, data): (d/name).write_bytes(data); return d/name
    torch.save({'w': torch.zeros(3)}, d/'state.pkl'); torch.save({'w': torch.zeros(3)}, d/'random.pt')
    other = d/'other'; other.mkdir()
    (other/'model.safetensors').write_bytes(st[:len(st)//2] + bytes(len(st) - len(st)//2))  # same size, zeroed half
    (other/'model.json').write_bytes(js)
    cfg = json.loads(js)
    from safetensors.torch import save_file
    save_file({'x': torch.zeros(2)}, d/'foreign.safetensors')
    save_file({'x': torch.zeros(2)}, d/'wrongnet.safetensors', metadata={'fastcifar': json.dumps(cfg)})
    return [(d/'missing.pkl', 'no such model file'), (d/'missing.json', 'no such model file'),
            (w('trunc.pkl', pkl[:len(pkl)//2]), 'cannot load'), (w('trunc.safetensors', st[:len(st)//2]), 'corrupt or truncated'),
            (w('head.safetensors', st[:100]), 'not a safetensors file'), (w('trunc.json', js[:len(js)//2]), 'invalid JSON'),
            (other/'model.json', 'sha256 differs'), (d/'random.pt', 'unknown model file type'),
            (d/'state.pkl', 'not an exported fastai Learner'),
            (w('plain.pkl', pickle.dumps({'a': 1})), 'cannot load'), (w('list.json', b'[1, 2]'), 'not a fastcifar model description'),
            (w('other.json', b'{"format": "keras"}'), 'not a fastcifar model description'),
            (w('noclasses.json', json.dumps({k: v for k, v in cfg.items() if k != 'classes'}).encode()), '"classes"'),
            (d/'foreign.safetensors', 'no model description'), (d/'wrongnet.safetensors', 'do not fit'),
            (w('newer.json', json.dumps({**cfg, 'version': 99}).encode()), 'upgrade fastcifar')]

def test_bad_model_files_one_line_each(run, images, tmp_path, capsys):
    out, _ = run
    for path, words in _bad_models(out, tmp_path):
        rc, o, e = _cli(capsys, str(path), [str(images[0])])
        assert rc == 2 and not o, path
        assert len(e) == 1 and e[0].startswith('fastcifar.predict: error: ') and words in e[0] and str(path) in e[0], e

@pytest.mark.parametrize('fmt', ['json', 'pkl'])
def test_bad_images_reported_good_ones_predicted(run, images, tmp_path, capsys, fmt):
    out, _ = run
    good = [str(f) for f in images[1].values()]
    (tmp_path/'empty').mkdir(); (tmp_path/'notes.txt').write_text('not an image')
    (tmp_path/'fake.png').write_text('not a png either')
    png = (images[0]/'rgb.png').read_bytes(); (tmp_path/'cut.png').write_bytes(png[:len(png)//2])
    bad = {tmp_path/'missing.jpg': 'no such file or folder', tmp_path/'notes.txt': 'not an image file',
           tmp_path/'fake.png': 'not an image file', tmp_path/'cut.png': 'unreadable or truncated image',
           tmp_path/'empty': 'no image files in folder'}
    args = [good[0], *map(str, bad), str(images[0])]
    rc, o, e = _cli(capsys, str(out/f'model.{fmt}'), args)
    assert rc == 1 and [l.split('\t')[0] for l in o] == [good[0]] + good
    assert len(e) == len(bad) + 1 and e[-1] == f'fastcifar.predict: error: {len(bad)} of {len(good) + 1 + len(bad)} images could not be predicted'
    for l, (p, words) in zip(e, bad.items()): assert l.startswith('fastcifar.predict: error: ' + words) and str(p) in l, l
    rc, o, e = _cli(capsys, str(out/f'model.{fmt}'), [])
    assert rc == 2 and e == ['fastcifar.predict: error: no images given: pass image files or folders after the model']

class _Evil:
    "Unpickling this runs a shell command that creates `marker`"
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))

def test_crafted_pickle_never_runs_in_safe_loader(run, images, tmp_path, capsys):
    out, _ = run
    marker = tmp_path/'pwned'
    evil = pickle.dumps(_Evil(marker))
    pickle.loads(pickle.dumps(_Evil(tmp_path/'live')))
    assert (tmp_path/'live').exists()  # the payload is real: unpickling it runs the command
    (tmp_path/'evil.safetensors').write_bytes(evil)
    zipped = tmp_path/'zipped.safetensors'
    torch.save(_Evil(marker), zipped)  # torch's zip pickle format, renamed
    cfg = json.loads((out/'model.json').read_text())
    (tmp_path/'evil.pkl').write_bytes(evil)
    (tmp_path/'points.json').write_text(json.dumps({**cfg, 'weights': 'evil.pkl', 'sha256': hashlib.sha256(evil).hexdigest()}))
    (tmp_path/'spec.json').write_text(json.dumps({**cfg, 'model': 'os:system'}))
    (tmp_path/'entry.json').write_text(json.dumps({**cfg, 'model': 'fastcifar.predict:main'}))
    shutil.copy(out/'model.safetensors', tmp_path)
    cases = [(tmp_path/'evil.safetensors', 'not a safetensors file'), (zipped, 'not a safetensors file'),
             (tmp_path/'points.json', 'not a safetensors file'), (tmp_path/'spec.json', 'outside the fastcifar package'),
             (tmp_path/'entry.json', 'not an nn.Module class')]
    for path, words in cases:
        with pytest.raises(ModelError, match=words): load_model(path)
        rc, o, e = _cli(capsys, str(path), [str(images[0])])
        assert rc == 2 and len(e) == 1 and words in e[0] and str(path) in e[0], e
    # allow_module lets the json name another module's class, which must still be an nn.Module that fits the weights
    with pytest.raises(ModelError, match='do not fit'):
        load_model(_with_spec(tmp_path, cfg, 'torch.nn:Identity'), allow_module=True)
    assert not marker.exists()

def _with_spec(d, cfg, spec):
    p = d/'allowed.json'
    p.write_text(json.dumps({**cfg, 'model': spec}))
    return p

def test_a_model_with_non_finite_weights_is_refused(run, tmp_path):
    out, learn = run
    from fastcifar.export import export_safe
    from safetensors.torch import load_file, save_file
    bad = tmp_path/'bad'; bad.mkdir()
    for f in ('model.json', 'model.safetensors'): shutil.copy(out/f, bad/f)
    sd = load_file(bad/'model.safetensors')
    sd['c4.conv2.1.running_var'][0] = float('nan')  # a diverged run's BatchNorm statistics
    save_file(sd, bad/'model.safetensors')
    cfg = json.loads((bad/'model.json').read_text()); cfg.pop('sha256'); (bad/'model.json').write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match='NaN or infinite weights'): load_model(bad/'model.json')
    img = tmp_path/'a.png'; Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    r = cli(bad/'model.json', [str(img)], out=io.StringIO(), err=(err := io.StringIO()))
    assert r == 2 and 'NaN or infinite weights' in err.getvalue() and 'nan' not in err.getvalue().split('(')[0]
    with torch.no_grad(): learn.model.c1.conv1[0].weight[0, 0, 0, 0] = float('inf')
    try:
        with pytest.raises(ModelError, match='NaN or infinite'): export_safe(learn, tmp_path/'x')
        assert not (tmp_path/'x'/'model.json').exists()
    finally:
        with torch.no_grad(): learn.model.c1.conv1[0].weight[0, 0, 0, 0] = 0.
