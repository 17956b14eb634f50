"The web demo: served on localhost, driven by gradio_client and a headless browser; bad uploads; the safe format only"
import json, os, pickle, re, shutil, socket, struct, subprocess, sys, time, urllib.request, zlib, numpy as np, pytest
from pathlib import Path
from PIL import Image
gr = pytest.importorskip('gradio')
gradio_client = pytest.importorskip('gradio_client')
import fastcifar.predict as P
from fastcifar.app import UploadError, make_demo, launch, main, read_upload, safe_model
from fastcifar.images import read_rgb
from fastcifar.predict import ModelError, load_model
from fastcifar.sources import load_cifar
from fastcifar.synthetic import synthetic_arrays
from .shipped_weights import write_untrained

ROOT = Path(__file__).resolve().parents[1]
WAIT = 60  # seconds: the most any one request, page or server start may take

def _png_header(w, h):
    "Bytes of a PNG whose header says `w`x`h` pixels, with no pixel data"
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) + chunk(b'IEND', b'')

def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def files(tmp_path_factory):
    "A folder of uploads, good and bad"
    d = tmp_path_factory.mktemp('uploads')
    x = synthetic_arrays(1, 1, seed=3)[2]
    Image.fromarray(x[0]).save(d/'rgb.png')
    Image.fromarray(x[1]).resize((300, 200)).save(d/'photo.jpg')
    Image.fromarray(x[2][..., 0].astype(np.uint16)*257).save(d/'grey16.png')  # a 16-bit PNG
    Image.fromarray(x[3]).convert('CMYK').save(d/'cmyk.jpg')
    (d/'notes.png').write_text('not an image')
    data = (d/'rgb.png').read_bytes(); (d/'truncated.png').write_bytes(data[:len(data)//2])
    (d/'bomb.png').write_bytes(_png_header(20000, 20000))  # PIL will not open it
    (d/'big.png').write_bytes(_png_header(9000, 8000))     # PIL opens it; over the demo's 64 MP
    return d

@pytest.fixture(scope='module')
def run(tmp_path_factory, tiny_tgz):
    "A run folder: a weights-only model, figures, history.csv and results.json naming a tiny synthetic CIFAR-10"
    d = tmp_path_factory.mktemp('run')
    write_untrained(d, 'model', best=False)
    for f in ('curves.png', 'confusion_matrix.png'): Image.new('RGB', (64, 48), 'white').save(d/f)
    (d/'history.csv').write_text('epoch,train_loss,test_accuracy\n1,2.3,0.1\n2,2.1,0.2\n')
    (d/'results.json').write_text(json.dumps({'final_test_accuracy': 0.2, 'epochs': 2, 'data': str(tiny_tgz)}))
    return d

@pytest.fixture(scope='module')
def server(run):
    "The run's demo served on a free localhost port: its URL (shut down after the tests)"
    demo = make_demo(run)
    launch(demo, port=_free_port(), prevent_thread_lock=True, quiet=True)
    try: yield demo.local_url
    finally: demo.close()

@pytest.fixture(scope='module')
def client(server, tmp_path_factory):
    return gradio_client.Client(server, verbose=False, download_files=str(tmp_path_factory.mktemp('downloads')),
                                httpx_kwargs={'timeout': WAIT})

def _classify(client, f, tta=False, layer='c4.conv2', alpha=0.5):
    "(label, Grad-CAM image path, {class: prob}, message update) of upload `f`, bounded in time"
    return client.submit(gradio_client.handle_file(str(f)), tta, layer, alpha, api_name='/classify').result(timeout=WAIT)

def test_classify_as_predict(client, run, files):
    pred = load_model(run)
    for name in ('rgb.png', 'photo.jpg', 'grey16.png', 'cmyk.jpg'):
        label, cam, probs, msg = _classify(client, files/name)
        ref = pred.probs(read_rgb(files/name)[None])[0].numpy()
        assert list(probs) == pred.classes and sum(probs.values()) == pytest.approx(1, abs=1e-5)
        np.testing.assert_allclose(list(probs.values()), ref, atol=1e-6)
        assert label['label'] == pred.predict(files/name)[0].label == max(probs, key=probs.get), name
        assert [c['label'] for c in label['confidences']] == sorted(probs, key=probs.get, reverse=True)[:3]  # top 3
        with Image.open(cam) as im: assert im.size == (256, 256) and im.mode == 'RGB'
        assert not msg['visible']

def test_tta_and_heat_map_settings(client, run, files):
    x, pred = read_rgb(files/'photo.jpg'), load_model(run)
    _, cam, probs, _ = _classify(client, files/'photo.jpg', tta=True, layer='c1.conv1', alpha=0)
    np.testing.assert_allclose(list(probs.values()), pred.probs(x[None], tta=True)[0].numpy(), atol=1e-6)
    expected = np.asarray(Image.fromarray(x).resize((256, 256), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(np.asarray(Image.open(cam)), expected)  # opacity 0: the 32x32 input, enlarged
    _, hot, _, _ = _classify(client, files/'photo.jpg', layer='c3.strided', alpha=1)
    assert not np.array_equal(np.asarray(Image.open(hot)), expected)

def test_bad_upload_in_page(client, files):
    for name, words in (('notes.png', 'notes.png is not an image file'), ('truncated.png', 'truncated.png is truncated or corrupt'),
                        ('big.png', 'big.png is too large: 9000x8000 pixels')):
        label, cam, probs, msg = _classify(client, files/name)
        assert msg['visible'] and msg['value'].startswith(words) and 'Traceback' not in msg['value'], msg
        assert not label and cam is None and probs is None

def test_read_upload(files):
    for name in ('grey16.png', 'cmyk.jpg', 'photo.jpg'):
        x = read_upload(files/name)
        assert x.shape == (32, 32, 3) and x.dtype == np.uint8 and (x == read_rgb(files/name)).all()
    for name, words in (('notes.png', 'is not an image file'), ('truncated.png', 'is truncated or corrupt'),
                        ('bomb.png', 'is too large'), ('big.png', '9000x8000 pixels; the demo takes images of at most 64 megapixels'),
                        ('missing.png', 'cannot read missing.png')):
        with pytest.raises(UploadError, match=re.escape(words)) as e: read_upload(files/name)
        assert '\n' not in str(e.value)
    with pytest.raises(UploadError, match='300x200 pixels; the demo takes images of at most 0.05 megapixels'): read_upload(files/'photo.jpg', max_pixels=50_000)

def test_mistakes(client, run, tiny_tgz):
    "The Run tab's gallery: the most confident wrong test predictions, most confident first, with their heat maps"
    gal = client.submit(api_name='/mistakes').result(timeout=WAIT)
    c, pred = load_cifar(tiny_tgz), load_model(run)
    conf, yhat = pred.probs(c.x_test).max(1)
    wrong = (yhat.numpy() != c.y_test)
    assert len(gal) == min(12, wrong.sum()) > 0
    top = np.sort(conf.numpy()[wrong])[::-1][:len(gal)]
    for g, p in zip(gal, top):
        m = re.fullmatch(r'(\w+) (\d+)% \(is (\w+)\)', g['caption'])
        assert m and m[1] != m[3] and abs(int(m[2]) - 100*p) <= 0.5 + 1e-6
        with Image.open(g['image']) as im: assert im.size == (128, 128) and im.format == 'PNG'

def test_writes_nothing_into_the_package(server):
    "gradio writes a .pyi beside any module that subclasses one of its components: the app must subclass none"
    assert not list((ROOT/'fastcifar').glob('*.pyi'))

def _components(demo, kind): return [b for b in demo.blocks.values() if isinstance(b, kind)]

def test_run_tab(run, tmp_path):
    tabs = lambda demo: [t.label for t in _components(demo, gr.Tab)]
    assert tabs(make_demo(run)) == ['Classify', 'Run'] and tabs(make_demo(run/'model.json')) == ['Classify']
    other = tmp_path/'run'; shutil.copytree(run, other)
    (other/'results.json').write_text(json.dumps({'data': str(tmp_path/'gone.tgz')}))
    (other/'curves.png').unlink()
    notes = ' '.join(str(m.value) for m in _components(make_demo(other), gr.Markdown))
    assert 'is not on this machine' in notes and 'no curves.png' in notes

class _Trap:
    "A pickle that leaves a file behind if anything ever unpickles it"
    def __init__(self, path): self.path = path
    def __reduce__(self): return (Path.touch, (self.path,))

def test_refuses_pickles(run, tmp_path, capsys):
    trap = tmp_path/'unpickled'
    pkl = tmp_path/'model.pkl'; pkl.write_bytes(pickle.dumps(_Trap(trap)))
    only = tmp_path/'run'; only.mkdir(); shutil.copy(pkl, only/'model.pkl')
    for bad, words in ((pkl, 'refusing'), (only, 'no weights-only model in'), (only, 'refusing model.pkl')):
        with pytest.raises(ModelError, match=words): safe_model(bad)
    with pytest.raises(SystemExit) as e: main(str(pkl), port=_free_port())
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f'fastcifar.app: error: refusing {pkl}') and 'Traceback' not in err
    assert not trap.exists()
    assert safe_model(run).source == str(run/'model.json')  # a run folder with model.pkl too: the safe pair

def test_no_shipped_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(P, 'SHIPPED', tmp_path)
    with pytest.raises(ModelError, match='no shipped model in this install; pass a model path or run folder'): make_demo()
    with pytest.raises(SystemExit) as e: main(port=_free_port())
    assert e.value.code == 2 and 'no shipped model in this install' in capsys.readouterr().err

def test_cli_serves_shipped_model_without_fastai(tmp_path):
    "`python -m fastcifar.app --port N`: the shipped model ($FASTCIFAR_WEIGHTS) served on localhost; fastai never imported"
    write_untrained(tmp_path/'weights')
    port = _free_port()
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'FASTCIFAR_WEIGHTS': str(tmp_path/'weights'), 'CUDA_VISIBLE_DEVICES': ''}
    p = subprocess.Popen([sys.executable, '-X', 'importtime', '-m', 'fastcifar.app', '--port', str(port)], cwd=tmp_path,
                         env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path/'err.txt', 'w'))
    try:
        end, page = time.time() + WAIT, None
        while page is None and time.time() < end and p.poll() is None:
            try: page = urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=5).read().decode()
            except OSError: time.sleep(0.5)
        err = (tmp_path/'err.txt').read_text()
        assert page is not None, err[-2000:]
        assert 'fastcifar demo' in page and 'untrained.json' in page
        assert not re.search(r'\|\s+fastai\b', err), 'the demo imported fastai'
    finally:
        p.terminate()
        try: p.wait(10)
        except subprocess.TimeoutExpired: p.kill(); p.wait(10)

def _browser():
    "A headless Chromium driven by selenium, or skip saying what is missing"
    exe = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)
    drv = shutil.which('chromedriver')
    if not (exe and drv): pytest.skip('no headless Chromium and chromedriver (apt-get install chromium chromium-driver)')
    wd = pytest.importorskip('selenium.webdriver')
    o = wd.ChromeOptions()
    o.binary_location = exe
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1280,900'): o.add_argument(a)
    d = wd.Chrome(options=o, service=wd.chrome.service.Service(drv))  # the local driver: selenium downloads nothing
    d.set_page_load_timeout(WAIT)
    return d

def test_browser(server, run, files, tmp_path):
    "A real browser loads the page, uploads an image and shows its top class; a bad upload shows the message"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    d = _browser()
    try:
        d.get(server)
        wait = WebDriverWait(d, WAIT)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#upload input[type=file]'))
        d.find_element(By.CSS_SELECTOR, '#upload input[type=file]').send_keys(str(files/'rgb.png'))
        wait.until(lambda d: '%' in d.find_element(By.ID, 'prediction').text)  # the confidences are in
        lines = d.find_element(By.ID, 'prediction').text.splitlines()
        top = load_model(run).predict(files/'rgb.png')[0].label
        assert lines[1] == top and any(a == top and b.endswith('%') for a, b in zip(lines[2:], lines[3:])), lines
        d.save_screenshot(str(tmp_path/'demo.png'))
        with Image.open(tmp_path/'demo.png') as im: assert im.size[0] >= 1000
        d.find_element(By.CSS_SELECTOR, '#upload button[aria-label="Remove Image"]').click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#upload input[type=file]'))
        d.find_element(By.CSS_SELECTOR, '#upload input[type=file]').send_keys(str(files/'notes.png'))
        wait.until(lambda d: 'notes.png is not an image file' in d.find_element(By.TAG_NAME, 'body').text)
    finally: d.quit()

def _tabs(demo): return [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]

def test_examples_are_cifar10_test_images():
    "The packaged examples: one 32x32 RGB test image of each class (the first of each in the shared copy, where it is here)"
    from fastcifar.app import _examples
    from fastcifar.sources import CLASSES
    paths, what = _examples()
    assert [Path(p).stem for p in paths] == sorted(CLASSES) and 'CIFAR-10 test images' in what
    xs = [read_rgb(p) for p in paths]
    assert all(x.shape == (32, 32, 3) and x.dtype == np.uint8 for x in xs)
    shared = ROOT.parent/'shared'/'data'/'cifar10.tgz'
    if shared.exists():
        d = load_cifar(shared)
        for p, x in zip(paths, xs):
            c = list(d.classes).index(Path(p).stem)
            np.testing.assert_array_equal(x, d.x_test[np.flatnonzero(d.y_test == c)[0]])

def test_shipped_model_shows_its_committed_run(tmp_path, monkeypatch):
    "A shipped model whose .json names a committed run (results/<run>/) gets the Run tab; an unknown or odd name does not"
    run = next(p.parent.name for p in sorted((ROOT/'results').glob('*/results.json')))
    for name, tabs in ((run, ['Classify', 'Run']), ('no-such-run', ['Classify']), ('../results', ['Classify'])):
        js = write_untrained(tmp_path/name.replace('/', '_'))
        js.write_text(json.dumps({**json.loads(js.read_text()), 'run': name}))
        monkeypatch.setattr(P, 'SHIPPED', js.parent)
        demo = make_demo()
        assert _tabs(demo) == tabs, name
        demo.close()
