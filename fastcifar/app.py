"""A web demo of a trained model, in fastai's course convention (Gradio): `python -m fastcifar.app [MODEL|RUN_FOLDER] [--port N]`.

Tab "Classify": upload an image (or pick an example): its top classes (flip TTA optional) and a Grad-CAM overlay of the
top class at any conv layer. Tab "Run" (given a run folder): the run's figures, per-epoch table and, on request, its most
confident test mistakes with their heat maps. Only the weights-only format is loaded (a .pkl is unpickled, which runs
code from the file: refused), and nothing of training or fastai is imported. A Hugging Face Space's app.py is
`from fastcifar.app import make_demo; demo = make_demo(); demo.launch()`; `fastcifar.app.demo` is that demo.
"""
import atexit, json, shutil, sys, tempfile, threading, warnings
from pathlib import Path
import torch
from PIL import Image, UnidentifiedImageError
from fastcore.script import call_parse
try: import gradio as gr
except ImportError: raise ImportError('the demo needs gradio: pip install "fastcifar[app]"') from None
from .export import _short
from .gradcam import DEFAULT_LAYER, LAYERS, confident_mistakes, gradcam, overlay
from .images import read_rgb
from .predict import ModelError, SafePredictor, load_model
from .synthetic import synthetic_arrays

__all__ = ['MAX_PIXELS', 'VIEW', 'UploadError', 'safe_model', 'read_upload', 'classify', 'mistakes',
           'make_demo', 'launch', 'main']

MAX_PIXELS = 64_000_000  # uploads above this are refused before decoding (64 MP: ~200 MB decoded)
VIEW = 256               # side in pixels of a heat map overlay in the page (the 32x32 input, enlarged)
_CSS = '#upload img {image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain}'  # a 32x32 upload, seen
_PKL = ('the demo loads only the weights-only format (model.safetensors + model.json): a .pkl is unpickled, which runs '
        'code from the file; export one with fastcifar.export.export_safe')

# ----------------------------------------------------------------------------------------------- model and images

def safe_model(model=None):
    "`SafePredictor` of `model`: a model.json/.safetensors, a run folder, a shipped name, None (the best shipped); never a .pkl"
    if model is not None:
        p = Path(model)
        if p.is_dir():  # not `load_model`'s folder rule, which falls back to model.pkl
            found = next((p/n for n in ('model.json', 'model.safetensors') if (p/n).is_file()), None)
            if found is None: raise ModelError(f'no weights-only model in {p}' + (f': refusing model.pkl; {_PKL}' if (p/'model.pkl').exists() else ''))
            model = found
        elif p.suffix.lower() == '.pkl': raise ModelError(f'refusing {p}: {_PKL}')
    pred = load_model(model)
    if not isinstance(pred, SafePredictor): raise ModelError(f'refusing {model}: {_PKL}')
    return pred

class UploadError(ValueError):
    "An upload the demo cannot classify: one line for the page"

def read_upload(path, max_pixels=MAX_PIXELS, name=None):
    "uint8 (32,32,3) RGB array of an uploaded file, made as the training data was; else an `UploadError` saying why"
    name = name or Path(path).name
    try: im = Image.open(path)
    except UnidentifiedImageError: raise UploadError(f'{name} is not an image file: upload a PNG, JPEG, GIF, BMP, TIFF or WebP image') from None
    except Image.DecompressionBombError: raise UploadError(f'{name} is too large: the demo takes images of at most {max_pixels/1e6:g} megapixels') from None
    except Exception as e: raise UploadError(f'cannot read {name} ({_short(e, 120)})') from None
    with im:
        if im.width*im.height > max_pixels:
            raise UploadError(f'{name} is too large: {im.width}x{im.height} pixels; the demo takes images of at most {max_pixels/1e6:g} megapixels')
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # e.g. PIL's note on palette transparency: converted as in training
                return read_rgb(im)
        except Exception as e: raise UploadError(f'{name} is truncated or corrupt: it cannot be decoded ({_short(e, 120)})') from None

def classify(pred, x, tta=False, layer=DEFAULT_LAYER, alpha=0.5, size=VIEW):
    "({class: probability} of every class, uint8 (size,size,3) Grad-CAM overlay of the top class) of uint8 (32,32,3) `x`"
    p = pred.probs(x[None], tta=tta)[0]
    heat = gradcam(pred.model, pred.preprocess(x[None]), layer, target=int(p.argmax()))[0]
    return dict(zip(pred.classes, map(float, p))), overlay(x, heat, alpha, size)

def mistakes(pred, data, n=12, layer=DEFAULT_LAYER, size=128):
    "[(Grad-CAM overlay, caption)] of the `n` test images of CIFAR-10 copy `data` the model gets wrong most confidently"
    from .sources import load_cifar  # on demand: the first decoding of a data set takes a while (cached after)
    c = load_cifar(data)
    missing = [k for k in c.classes if k not in pred.classes]
    if missing: raise ModelError(f'the model has no class {missing[0]!r} of the data')
    y = torch.tensor([pred.classes.index(k) for k in c.classes])[torch.from_numpy(c.y_test)]
    idx, yhat, conf = confident_mistakes(pred, c.x_test, y, n)
    heat = gradcam(pred.model, pred.preprocess(c.x_test[idx]), layer, target=yhat)
    return [(overlay(c.x_test[i], h, 0.5, size), f'{pred.classes[k]} {p:.0%} (is {pred.classes[y[i]]})')
            for i, k, p, h in zip(idx, yhat, conf, heat)]

# ---------------------------------------------------------------------------------------------------------- page

EXAMPLES = Path(__file__).parent/'examples'  # package data: the first test image of each class of the CIFAR-10 copy

def _examples():
    "(paths, label): the packaged CIFAR-10 test images, else a few synthetic ones (class-coloured stripes) in a temp folder"
    if real := sorted(EXAMPLES.glob('*.png')): return [str(p) for p in real], 'Examples (CIFAR-10 test images, one of each class)'
    d = Path(tempfile.mkdtemp(prefix='fastcifar-examples-'))
    atexit.register(shutil.rmtree, d, True)
    xs = synthetic_arrays(1, 1, seed=0)[2]
    for i, x in enumerate(xs): Image.fromarray(x).save(d/f'synthetic_{i}.png')
    return [str(d/f'synthetic_{i}.png') for i in range(len(xs))], 'Examples (synthetic stripes, not photos)'

def _json(p):
    try: return json.loads(Path(p).read_text())
    except (OSError, ValueError): return {}

def _figures(res):
    "Markdown table of a run's results.json figures"
    pct = lambda v: f'{v:.2%}' if isinstance(v, (int, float)) else v
    rows = [('test accuracy', pct(res.get('final_test_accuracy'))), ('with flip TTA', pct(res.get('final_test_accuracy_flip_tta'))),
            ('best (epoch)', f"{pct(res.get('best_test_accuracy'))} ({res.get('best_epoch')})" if 'best_test_accuracy' in res else None),
            ('epochs', res.get('epochs')), ('recipe', res.get('recipe')), ('device', res.get('device')),
            ('training time', f"{res['train_seconds']/60:.0f} min" if isinstance(res.get('train_seconds'), (int, float)) else None)]
    return '| figure | value |\n|---|---|\n' + '\n'.join(f'| {k} | {v} |' for k, v in rows if v is not None)

def _header(pred, res):
    n = sum(p.numel() for p in pred.model.parameters())
    acc = res.get('final_test_accuracy')
    return (f'# fastcifar: what is in this image?\nA {n:,}-parameter CNN trained on CIFAR-10 ({", ".join(pred.classes)}); '
            f'it sees every image as 32x32 pixels.' + (f' Test accuracy {acc:.2%}.' if isinstance(acc, (int, float)) else '')
            + f'\n\nModel: `{pred.source}`')

def _classify_tab(pred, topk, examples, what):
    def run(upload, tta, layer, alpha):
        if not upload: return None, None, None, gr.Textbox(value='', visible=False)
        try:
            if not upload.get('path'): raise UploadError('the image did not arrive: upload it again')
            x = read_upload(upload['path'], name=upload.get('orig_name'))
        except UploadError as e:
            gr.Warning(str(e))
            return None, None, None, gr.Textbox(value=str(e), visible=True)
        probs, cam = classify(pred, x, tta, layer, alpha)
        return probs, cam, probs, gr.Textbox(value='', visible=False)
    with gr.Row():
        with gr.Column():
            img = gr.Image(label='Image (any size: the model sees it as 32x32)', type='filepath', image_mode=None,
                           sources=['upload', 'clipboard'], height=300, elem_id='upload')
            tta = gr.Checkbox(label='flip TTA: average with the mirror image')
            with gr.Row():
                layer = gr.Dropdown(LAYERS, value=DEFAULT_LAYER, label='Grad-CAM layer')
                alpha = gr.Slider(0, 1, 0.5, step=0.05, label='heat map opacity (0: the 32x32 input)')
        with gr.Column():
            msg = gr.Textbox(label='Upload problem', visible=False, interactive=False)
            label = gr.Label(num_top_classes=topk, label='Prediction', elem_id='prediction')
            cam = gr.Image(label='Grad-CAM: where the model sees the top class', type='numpy', format='png', height=300, elem_id='gradcam')
            with gr.Accordion('probabilities of all classes', open=False): probs = gr.JSON(label='probabilities')
    gr.Examples(examples, inputs=img, label=what)
    # the upload undecoded (gradio has checked and cached the file): gr.Image's own decoding would fail on a bad file
    # with a bare "Error", where `read_upload` says what is wrong
    gr.on([img.change, tta.change, layer.change, alpha.release], run, inputs=[img, tta, layer, alpha],
          outputs=[label, cam, probs, msg], api_name='classify', trigger_mode='always_last', preprocess=False)

def _data(run, res):
    "The run's CIFAR-10 copy if it is on this machine, else None"
    d = res.get('data')
    if not d: return None
    p = Path(d) if Path(d).is_absolute() else run/d
    return p if p.exists() else None

def _run_tab(pred, run, res):
    run = Path(run)
    gr.Markdown(f'Run folder `{run}`\n\n' + _figures(res))
    with gr.Row():
        for f, what in (('curves.png', 'Training curves'), ('confusion_matrix.png', 'Confusion matrix')):
            if (run/f).is_file(): gr.Image(str(run/f), label=what, interactive=False)
            else: gr.Markdown(f'*no {f} in the run folder*')
    if (run/'history.csv').is_file():
        import pandas as pd  # a gradio dependency
        gr.Dataframe(pd.read_csv(run/'history.csv'), label='Per-epoch history', interactive=False)
    data = _data(run, res)
    if data is None:
        gr.Markdown(f"*The run's data ({res.get('data') or 'not recorded'}) is not on this machine: no gallery of its test mistakes.*")
        return
    def show():
        try: return mistakes(pred, data)
        except Exception as e: raise gr.Error(f'cannot find the mistakes on {data}: {_short(e, 200)}')
    btn = gr.Button(f'Show the most confident test mistakes (predicts the test set of {data}: about a minute on a CPU)')
    gal = gr.Gallery(label='Most confident mistakes: predicted class and probability (true class), heat map of the prediction', columns=6, format='png', elem_id='mistakes')
    btn.click(show, outputs=gal, api_name='mistakes')

def _shipped_run(desc):
    "The committed run folder (results/<run>/ of a source checkout) that a shipped model's .json names, or None"
    name = desc.get('run')
    if not isinstance(name, str) or Path(name).name != name or name in ('', '.', '..'): return None
    d = Path(__file__).resolve().parents[1]/'results'/name
    return d if (d/'results.json').is_file() else None

def make_demo(model=None, topk=3, examples=None):
    "The gr.Blocks demo of `model` (weights-only file, run folder: adds the Run tab, shipped name, None: the best shipped)"
    pred = safe_model(model)
    if not 1 <= topk <= len(pred.classes): raise ValueError(f'topk {topk}: must be 1 to {len(pred.classes)}')
    run = Path(model) if model is not None and Path(model).is_dir() else None
    src = Path(pred.source)
    desc = {} if run else _json(src.with_suffix('.json'))
    res = _json(run/'results.json') if run else dict(desc.get('results') or {})
    if 'recipe' in desc: res['recipe'] = desc['recipe']  # today's name of a shipped run's recipe
    run = run or _shipped_run(desc)  # a shipped model's figures, where its committed run folder is at hand
    examples, what = (examples, 'Examples') if examples else _examples()
    with gr.Blocks(title='fastcifar demo', analytics_enabled=False) as demo:
        gr.Markdown(_header(pred, res))
        with gr.Tab('Classify'): _classify_tab(pred, topk, examples, what)
        if run:
            with gr.Tab('Run'): _run_tab(pred, run, res)
    demo.predictor = pred
    return demo

def launch(demo, host='127.0.0.1', port=7860, **kw):
    "Serve `demo` on `host`:`port` (no server-side rendering, no share link); uploads up to 50 MB"
    return demo.launch(server_name=host, server_port=port, ssr_mode=False, share=False, max_file_size='50mb', css=_CSS, **kw)

_demo, _lock = None, threading.Lock()
def __getattr__(name):
    "`fastcifar.app.demo`: the best shipped model's demo, built on first use (what Spaces and `gradio` reload look up)"
    global _demo
    if name != 'demo': raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    with _lock:
        if _demo is None: _demo = make_demo()
    return _demo

@call_parse(pos=['model'])
def main(
    model:str=None,          # weights-only model (.json/.safetensors), run folder (adds the Run tab) or shipped name; default: the best shipped model
    port:int=7860,           # port to serve on
    host:str='127.0.0.1',    # address to serve on (127.0.0.1: this machine only; 0.0.0.0: the network)
    topk:int=3,              # classes shown for each image
):
    "Serve a web demo of a trained CIFAR-10 model: classify images, their Grad-CAM heat maps, the run's figures"
    try: demo = make_demo(model, topk=topk)
    except (ModelError, ValueError) as e: print(f'fastcifar.app: error: {e}', file=sys.stderr); sys.exit(2)
    launch(demo, host, port)
