"Shipped weights: `fastcifar/weights/` (or $FASTCIFAR_WEIGHTS), `load_model()` by default and by name, the CLI without a model"
import configparser, json, os, subprocess, sys, numpy as np, pytest
from pathlib import Path
from PIL import Image
import fastcifar.predict as P
from fastcifar.predict import ModelError, SafePredictor, _names_model, load_model, main, shipped_models
from fastcifar.synthetic import synthetic_arrays
from .shipped_weights import write_untrained

ROOT = Path(__file__).resolve().parents[1]
NONE = 'no shipped model in this install; pass a model path or run folder'

@pytest.fixture
def shipped(tmp_path, monkeypatch):
    "A weights folder holding one untrained Net, 'untrained', named best by index.json, installed as `SHIPPED`"
    d = tmp_path/'weights'
    write_untrained(d, results={'final_test_accuracy': 0.1})
    monkeypatch.setattr(P, 'SHIPPED', d)
    return d

@pytest.fixture(scope='module')
def images(tmp_path_factory):
    "A folder of three synthetic PNG images and their paths"
    d = tmp_path_factory.mktemp('images')
    for i, x in enumerate(synthetic_arrays(1, 1, seed=3)[2][:3]): Image.fromarray(x).save(d/f'{i}.png')
    return d, sorted(d.glob('*.png'))

def test_package_data_ships_weights():
    cfg = configparser.ConfigParser(); cfg.read(ROOT/'setup.cfg')
    assert cfg['options.package_data']['fastcifar'].split(', ') == ['weights/*.json', 'weights/*.safetensors', 'examples/*.png']
    if not os.environ.get('FASTCIFAR_WEIGHTS'): assert P.SHIPPED == ROOT/'fastcifar'/'weights'

def test_shipped_models(shipped):
    write_untrained(shipped, 'another', best=False, seed=1)
    assert shipped_models() == {'another': shipped/'another.json', 'untrained': shipped/'untrained.json'}  # sorted, no index.json
    assert list(shipped_models()) == ['another', 'untrained']

def test_default_and_by_name(shipped, images):
    x = np.stack([np.asarray(Image.open(f)) for f in images[1]])
    ref = load_model(shipped/'untrained.json')
    for pred in (load_model(), load_model('untrained'), load_model('best')):
        assert isinstance(pred, SafePredictor) and pred.source == str(shipped/'untrained.json')
        np.testing.assert_array_equal(pred.probs(x).numpy(), ref.probs(x).numpy())
    write_untrained(shipped, 'another', best=False, seed=1)
    assert load_model('another').source == str(shipped/'another.json')
    assert not np.allclose(load_model('another').probs(x).numpy(), ref.probs(x).numpy())
    with pytest.raises(ModelError, match='no such model file: nothere'): load_model('nothere')

def test_existing_path_wins_over_a_name(shipped, tmp_path, monkeypatch):
    "A file or folder that exists is loaded as given, even if a shipped model has its name"
    run = tmp_path/'untrained'; write_untrained(run, 'model', best=False, seed=1)
    monkeypatch.chdir(tmp_path)
    assert load_model('untrained').source == str(Path('untrained')/'model.json')

def test_none_shipped(tmp_path, monkeypatch):
    for d in (tmp_path/'missing', tmp_path):  # no folder; a folder without index.json
        monkeypatch.setattr(P, 'SHIPPED', d)
        with pytest.raises(ModelError) as e: load_model()
        assert str(e.value) == NONE and shipped_models() == {}

def test_index_names_a_missing_model(shipped):
    (shipped/'index.json').write_text(json.dumps({'best': 'gone'}))
    with pytest.raises(ModelError, match="names 'gone' as 'best', but there is no gone.json"): load_model()
    (shipped/'index.json').write_text('{not json')
    with pytest.raises(ModelError, match='unreadable list of shipped models'): load_model()

def test_first_argument(tmp_path, images):
    "The CLI's first argument is the model when it names one, else the first image"
    run = tmp_path/'run'; write_untrained(run, 'model', best=False)
    for a, model in (('m.json', True), ('m.safetensors', True), ('m.pkl', True), (run, True), ('best', True),
                     ('runs/typo', True), ('cat.png', False), ('cat.JPG', False), (images[0], False)):
        assert _names_model(str(a)) is model, a

def _main(capsys, *args, **kw):
    with pytest.raises(SystemExit) as e: main(*map(str, args), **kw)
    o, err = capsys.readouterr()
    return e.value.code, o.splitlines(), err.splitlines()

def test_cli_without_model(shipped, images, capsys):
    d, files = images
    ref = load_model().predict(files)
    rc, o, e = _main(capsys, *files)
    assert rc == 0 and not e and [l.split('\t')[:2] for l in o] == [[str(f), p.label] for f, p in zip(files, ref)]
    rc, o2, e = _main(capsys, d)  # a folder of images
    assert rc == 0 and o2 == o
    rc, o3, e = _main(capsys, 'untrained', *files)  # by name, as before: model first
    assert rc == 0 and o3 == o
    write_untrained(shipped, 'another', best=False, seed=1)
    rc, o4, e = _main(capsys, *files, model='another')  # --model NAME
    assert rc == 0 and o4 == [f"{f}\t{p.label}\t{p.prob:.4f}" for f, p in zip(files, load_model('another').predict(files))]
    assert o4 != o and _main(capsys, *files, model=shipped/'another.json')[1] == o4  # --model PATH

def test_cli_none_shipped(tmp_path, images, capsys, monkeypatch):
    monkeypatch.setattr(P, 'SHIPPED', tmp_path)
    rc, o, e = _main(capsys, images[1][0])
    assert rc == 2 and not o and e == [f'fastcifar.predict: error: {NONE}']

def test_cli_subprocess_env(shipped, images, tmp_path):
    "`python -m fastcifar.predict IMAGE --topk 3` in a fresh process, the weights named by $FASTCIFAR_WEIGHTS"
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'FASTCIFAR_WEIGHTS': str(shipped), 'CUDA_VISIBLE_DEVICES': ''}
    for model in ([], ['--model', 'untrained']):
        r = subprocess.run([sys.executable, '-m', 'fastcifar.predict', str(images[1][0]), '--topk', '3', *model], capture_output=True,
                           text=True, cwd=tmp_path, env=env, timeout=120)
        assert r.returncode == 0 and not r.stderr, r.stderr[-2000:]
        p = load_model().predict(images[1][0], topk=3)[0]
        cells = r.stdout.strip().split('\t')
        assert cells[0] == str(images[1][0]) and cells[1::2] == list(p.classes)

# ------------------------------------------------------------------------------------- the models this package ships

REAL = {p.stem: p for p in sorted((ROOT/'fastcifar'/'weights').glob('*.json')) if p.name != 'index.json'}

def test_the_package_ships_trained_models():
    "Each shipped model: a 30-epoch run's weights-only pair under 1 MB each, its results.json inside, and index.json names one."
    assert REAL, 'no model shipped in fastcifar/weights/'
    best = json.loads((ROOT/'fastcifar'/'weights'/'index.json').read_text())['best']
    assert best in REAL and REAL[best].stat().st_size < 2**20
    for name, js in REAL.items():
        cfg = json.loads(js.read_text())
        st = js.with_name(cfg['weights'])
        assert st == js.with_suffix('.safetensors') and st.stat().st_size < 2**20 and js.stat().st_size < 2**20
        r = cfg['results']
        assert r['epochs'] == 30 and r['params'] == cfg['params'] == 193_280 and 0.8 < r['final_test_accuracy'] < 1, name
    # the best is the one with the highest stated accuracy
    assert best == max(REAL, key=lambda n: json.loads(REAL[n].read_text())['results']['final_test_accuracy'])

@pytest.mark.parametrize('name', sorted(REAL))
def test_shipped_model_has_its_stated_test_accuracy(shared_data, name):
    "On the shared CIFAR-10 copy the shipped weights score their results.json's final test accuracy within 0.05 points (0.1 in fp32 for a bf16 run)."
    import torch
    from fastcifar.sources import load_cifar
    from fastcifar.train import pick_precision
    data, pred = load_cifar(shared_data), load_model(REAL[name])
    r = json.loads(REAL[name].read_text())['results']
    # evaluated as the run evaluated it: its precision (bf16 autocast on the CPU), channels-last memory. A CPU
    # without bf16 emulates it ten times slower than fp32 (over two minutes a model): there the check runs in fp32,
    # which moves a bf16 run's figure by a few hundredths of a point (-0.02 and -0.04 for the two shipped models on
    # an AVX2-only AMD EPYC, 2026-12-01), within the wider tolerance
    pred.model = pred.model.to(memory_format=torch.channels_last)
    bf16 = r['precision'] == 'bf16' and pick_precision('auto', 'cpu') == 'bf16'
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
        acc = (pred.probs(data.x_test).argmax(1).numpy() == data.y_test).mean()
    tol = 0.0005 if bf16 or r['precision'] == 'fp32' else 0.001
    assert abs(acc - r['final_test_accuracy']) <= tol, (acc, r['final_test_accuracy'], tol)
