"The notebooks run top to bottom, headless, on tiny synthetic data; the committed copies carry real outputs."
import base64, io, json, sys, time, nbformat, pytest
from pathlib import Path
from PIL import Image
from nbclient import NotebookClient

NB_DIR = Path(__file__).resolve().parents[1]/'notebooks'
# notebook: the fewest image outputs it must produce (one per plot it makes)
IMAGES = {'01_data.ipynb': 4, '02_lr_find.ipynb': 1, '03_train_interpret.ipynb': 4, '04_gradcam.ipynb': 3}
# the notebooks' parameters (read from the environment by their first code cell): tiny and quick; lr_find needs
# about 30 iterations or more, else its `slide` suggestion has too few points (IndexError)
PARAMS = dict(FASTCIFAR_NB_FRAC='1', FASTCIFAR_NB_EPOCHS='1', FASTCIFAR_NB_BS='16', FASTCIFAR_NB_LR_ITERS='40')

def outputs(nb, kind=None):
    return [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if kind is None or o.output_type == kind]

def pngs(nb):
    return [Image.open(io.BytesIO(base64.b64decode(o.data['image/png'])))
            for o in outputs(nb) if 'image/png' in o.get('data', {})]

def text(nb):
    "Everything the notebook printed or displayed as text, in one string."
    res = []
    for o in outputs(nb):
        if o.output_type == 'stream': res.append(o.text)
        elif 'data' in o: res += [o.data.get('text/plain', ''), o.data.get('text/html', '')]
    return '\n'.join(res)

@pytest.fixture(scope='module')
def kernel(tmp_path_factory):
    "A kernel spec that runs this interpreter (sys.executable), whatever kernels the user has installed."
    d = tmp_path_factory.mktemp('jupyter')
    (d/'kernels'/'fastcifar-test').mkdir(parents=True)
    (d/'kernels'/'fastcifar-test'/'kernel.json').write_text(json.dumps(dict(
        argv=[sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
        display_name='fastcifar tests', language='python')))
    return d

@pytest.fixture(scope='module')
def executed(kernel, tiny_tgz):
    """Copies of every notebook (in notebooks/, as a reader would) run on the tiny data, all four at once, each in its
    own kernel (most of a run is a kernel importing fastai, one core each): {name: (notebook, seconds) or the error}.
    The committed files are left alone."""
    import asyncio
    env = dict(JUPYTER_PATH=str(kernel), FASTCIFAR_NB_DATA=str(tiny_tgz), **PARAMS)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items(): mp.setenv(k, v)
        mp.delenv('MPLBACKEND', raising=False)
        before, listing = {n: (NB_DIR/n).read_bytes() for n in IMAGES}, sorted(NB_DIR.iterdir())
        async def run(name):
            nb = nbformat.reads(before[name].decode(), as_version=4)
            for c in nb.cells:
                if c.cell_type == 'code': c.outputs, c.execution_count = [], None
            t = time.perf_counter()
            # raises CellExecutionError, naming the cell, if any cell raises
            await NotebookClient(nb, timeout=300, startup_timeout=120, kernel_name='fastcifar-test',
                                 resources={'metadata': {'path': str(NB_DIR)}}).async_execute()
            return nb, time.perf_counter() - t
        async def run_all(): return await asyncio.gather(*map(run, IMAGES), return_exceptions=True)
        res = dict(zip(IMAGES, asyncio.run(run_all())))
    for n in IMAGES: assert (NB_DIR/n).read_bytes() == before[n], f'{n} was changed on disk'
    assert sorted(NB_DIR.iterdir()) == listing, 'a notebook wrote files into notebooks/'
    return res

@pytest.mark.parametrize('name', list(IMAGES))
def test_notebook_runs_on_tiny_data(name, executed):
    if isinstance(executed[name], BaseException): raise executed[name]
    nb, secs = executed[name]
    assert not outputs(nb, 'error')
    imgs = pngs(nb)
    assert len(imgs) >= IMAGES[name], f'{name}: {len(imgs)} image outputs, expected at least {IMAGES[name]}'
    assert all(im.size[0] >= 200 and im.size[1] >= 150 for im in imgs), [im.size for im in imgs]
    out = text(nb)
    # the parameter cell took the data and the run size from the environment
    if name == '01_data.ipynb': assert 'Cifar(200 train, 50 test' in out
    if name == '02_lr_find.ipynb':
        assert '13 train batches of 16' in out  # 200 images: 12 full batches and the last, partial one (the seed's)
        for s in ('minimum', 'steep', 'valley', 'slide'): assert s in out
        assert 'True' in outputs(nb)[-1].data['text/plain']  # the last cell built a fresh Learner (no optimizer yet)
    if name == '03_train_interpret.ipynb':
        assert 'final_test_accuracy' in out and 'actual' in out and 'predicted' in out
    if name == '04_gradcam.ipynb':  # the best shipped model, on the tiny test set
        assert 'model: fastcifar/weights/' in out and 'of 50 images' in out
    assert secs < 240, f'{name} took {secs:.0f}s on tiny data'

@pytest.mark.parametrize('name', list(IMAGES))
def test_committed_notebook_has_outputs(name):
    "The committed notebooks show their plots on GitHub: run top to bottom, no errors, every image in place."
    nb = nbformat.read(NB_DIR/name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == 'code']
    assert [c.execution_count for c in code] == list(range(1, len(code)+1)), 'not executed top to bottom in one run'
    assert not outputs(nb, 'error')
    assert len(pngs(nb)) >= IMAGES[name]
    assert 'FASTCIFAR_NB_DATA' in code[0].source  # the parameter cell
    assert 'PLACEHOLDER' not in ''.join(c.source for c in nb.cells)
