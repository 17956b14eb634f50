"""Predict the CIFAR-10 class of any image with a trained model: `python -m fastcifar.predict [MODEL] IMAGE...`.

Two model formats, picked by the file's suffix:
- `model.pkl`: fastai's `learn.export`. `load_learner` unpickles it, and unpickling runs code from the file:
  load only files you trust.
- `model.safetensors` + `model.json` (`fastcifar.export`): the Net's weights and what rebuilds it and its preprocessing.
  Loading them unpickles nothing and imports no fastai (fast start-up); preprocessing is done with PIL/numpy/torch.

Every image is made a 32x32 RGB image as the training data was (`fastcifar.images.to_rgb32`: EXIF orientation
applied, 16-bit and float images scaled by their range, any mode converted to RGB, any size resized bilinearly), then scaled and normalised as in training: validation transforms, no augmentation.

Shipped models: `fastcifar/weights/` (package data; `$FASTCIFAR_WEIGHTS` names another folder) holds `<name>.safetensors`
+ `<name>.json` per model and `index.json` ({"best": "<name>"}). `load_model()` with no path loads the best one,
`load_model('<name>')` a shipped one by name, and the CLI's MODEL may be left out.
"""
import json, os, sys, warnings
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from fastcore.script import call_parse
from .images import SIZE, read_rgb, to_rgb32
from .export import FORMAT, FORMAT_VERSION, ModelError, _short, check_finite, read_safe

__all__ = ['FORMAT', 'FORMAT_VERSION', 'IMAGE_EXTS', 'ModelError', 'Prediction', 'Predictor', 'LearnerPredictor',
           'SafePredictor', 'SHIPPED', 'read_rgb', 'image_files', 'shipped_models', 'load_model', 'predict', 'cli', 'main']

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.jpe', '.jfif', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm', '.pgm', '.pbm', '.pnm')
_CHUNK = 2048  # images decoded and predicted at a time (bounds memory for big folders)
SHIPPED = Path(os.environ.get('FASTCIFAR_WEIGHTS') or Path(__file__).parent/'weights')  # the models an install ships

@dataclass
class Prediction:
    "The top classes of one image, most likely first, or why it could not be predicted"
    path: str             # the file, or '<image N>' for an in-memory image
    classes: tuple = ()   # the top-k classes
    probs: tuple = ()     # their probabilities
    error: str = None     # one line naming the problem (then `classes` and `probs` are empty)
    @property
    def ok(self): return self.error is None
    @property
    def label(self): return self.classes[0] if self.classes else None
    @property
    def prob(self): return self.probs[0] if self.probs else None
    def to_dict(self):
        if not self.ok: return dict(path=self.path, error=self.error)
        return {'path': self.path, 'class': self.label, 'prob': self.prob,
                'topk': [{'class': c, 'prob': p} for c, p in zip(self.classes, self.probs)]}

# ---------------------------------------------------------------------------------------------------------- images

def _read(name, src, size):
    "(array, None) of image `src`, or (None, one-line error naming `name`)"
    if not isinstance(src, (str, os.PathLike)):
        try: return read_rgb(src, size), None
        except Exception as e: return None, f'not a usable image: {name} ({_short(e)})'
    try: im = Image.open(src)
    except UnidentifiedImageError: return None, f'not an image file: {name}'
    except FileNotFoundError: return None, f'no such file or folder: {name}'
    except OSError as e: return None, f'cannot read {name} ({e.strerror or _short(e)})'
    except Exception as e: return None, f'cannot open image {name} ({_short(e)})'  # e.g. PIL's DecompressionBombError
    try:
        with im, warnings.catch_warnings():
            warnings.simplefilter('ignore')  # e.g. PIL's note on palette transparency: converted as in training, not a problem
            return np.asarray(to_rgb32(im, size)), None
    except Exception as e: return None, f'unreadable or truncated image: {name} ({_short(e)})'

def image_files(folder):
    "Image files (by suffix) in `folder` and its subfolders, sorted, hidden ones skipped"
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        for f in sorted(files):
            if not f.startswith('.') and f.lower().endswith(IMAGE_EXTS): yield os.path.join(root, f)

def _expand(images):
    "(name, source, error) of each image in `images`: paths, folders (searched for image files), PIL images, arrays"
    if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim < 4):
        images = [images]
    for i, o in enumerate(images):
        if not isinstance(o, (str, os.PathLike)): yield f'<image {i}>', o, None; continue
        p = os.fspath(o)
        if os.path.isdir(p):
            n = 0
            for f in image_files(p): n += 1; yield f, f, None
            if not n: yield p, None, f'no image files in folder: {p} (looked for {", ".join(IMAGE_EXTS[:3])}, ...)'
        elif os.path.exists(p): yield p, p, None
        else: yield p, None, f'no such file or folder: {p}'

# ------------------------------------------------------------------------------------------------------ predictors

class Predictor:
    "Top-k classes of images: `predict(images, topk)`; `probs(x)` of a uint8 (N,H,W,3) batch. `load_model` gives one."
    kind = None
    def __init__(self, classes, source='', size=SIZE, bs=256):
        self.classes, self.source, self.size, self.bs = [str(c) for c in classes], str(source), size, bs
    def __repr__(self): return f'{type(self).__name__}({self.source!r}, {len(self.classes)} classes)'
    def probs(self, x, tta=False):
        "float32 (N, classes) CPU tensor of softmax probabilities of uint8 (N,size,size,3) RGB images `x`"
        # flip TTA: the mean with the mirror image's (never `learn.tta`, which applies the training augmentation)
        p = self._probs(x)
        return (p + self._probs(np.ascontiguousarray(x[:, :, ::-1])))/2 if tta else p
    def _probs(self, x): raise NotImplementedError
    def _check_topk(self, topk):
        if not isinstance(topk, int) or not 1 <= topk <= len(self.classes):
            raise ValueError(f'topk {topk}: must be 1 to {len(self.classes)} (the number of classes)')
        return topk
    def iter_predict(self, images, topk=1, tta=False):
        "`Prediction`s of `images` (files, folders, PIL images, arrays) in order, batched; bad images get an `error`"
        self._check_topk(topk)
        todo = []
        for name, src, err in _expand(images):
            x, err = (None, err) if err else _read(name, src, self.size)
            todo.append((name, x, err))
            if len(todo) >= _CHUNK: yield from self._flush(todo, topk, tta); todo = []
        yield from self._flush(todo, topk, tta)
    def _flush(self, todo, topk, tta):
        xs = [x for _, x, err in todo if err is None]
        if xs:
            p, i = self.probs(np.stack(xs), tta=tta), 0
            if not torch.isfinite(p).all(): raise ModelError(f'{self.source} gives NaN or infinite probabilities: its weights are broken; train it again')
            vals, idxs = p.topk(topk, dim=1)
            vals, idxs = vals.tolist(), idxs.tolist()
        for name, x, err in todo:
            if err: yield Prediction(name, error=err); continue
            yield Prediction(name, tuple(self.classes[j] for j in idxs[i]), tuple(vals[i])); i += 1
    def predict(self, images, topk=1, tta=False):
        "List of the `Prediction`s of `images` (see `iter_predict`)"
        return list(self.iter_predict(images, topk, tta))

class LearnerPredictor(Predictor):
    "Predictions of a fastai `Learner` (exported or in memory): `learn.dls.test_dl` + `learn.get_preds`, in fp32"
    kind = 'learner'
    def __init__(self, learn, source='<Learner>', bs=256):
        try: classes = list(learn.dls.vocab)
        except Exception: raise ModelError(f'not a classifier Learner: {source} has no class vocabulary') from None
        super().__init__(classes, source, SIZE, bs)
        self.learn = learn
    def _probs(self, x):
        learn = self.learn
        # items are (image,) tuples: the DataBlock's `GetImage` takes the first element; rm_type_tfms=0 keeps it
        # no worker processes: the items are decoded arrays already (and a GPU run's export may ask for 8)
        dl = learn.dls.test_dl([(a,) for a in x], rm_type_tfms=0, bs=self.bs, num_workers=0)
        # fp32 like the weights-only format: an in-memory Learner's autocast callbacks would change the numbers
        amp = [cb for cb in learn.cbs if type(cb).__name__ in ('CPUAutocast', 'MixedPrecision')]
        with learn.no_bar(), learn.removed_cbs(amp): p, _ = learn.get_preds(dl=dl)
        return p.float().cpu()

class SafePredictor(Predictor):
    "Predictions of a bare `nn.Module` with the json's preprocessing: scale to [0,1], normalise (no fastai)"
    kind = 'safe'
    def __init__(self, model, classes, mean, std, size=SIZE, scale=255., source='', bs=256, device='cpu'):
        super().__init__(classes, source, size, bs)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.mean, self.std = (torch.tensor(v, dtype=torch.float32, device=self.device).view(1, -1, 1, 1) for v in (mean, std))
        self.scale = float(scale)
    def preprocess(self, x):
        "Normalised float32 (N,3,size,size) tensor of uint8 (N,size,size,3) images, as fastai's batch transforms do"
        x = np.ascontiguousarray(x)
        t = torch.from_numpy(x if x.flags.writeable else x.copy()).to(self.device).permute(0, 3, 1, 2).contiguous()
        return (t.float().div_(self.scale) - self.mean) / self.std  # IntToFloatTensor, then Normalize
    def _probs(self, x):
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), self.bs): out.append(self.model(self.preprocess(x[i:i+self.bs])).float().softmax(-1).cpu())
        return torch.cat(out) if out else torch.empty(0, len(self.classes))

# --------------------------------------------------------------------------------------------------------- loading

def _load_safe(path, allow_module=False, device='cpu', bs=256):
    "`SafePredictor` of the weights-only format (see `fastcifar.export.read_safe`), checked on one blank image"
    model, cfg = read_safe(path, allow_module)
    pred = SafePredictor(model, cfg['classes'], cfg['mean'], cfg['std'], cfg['size'], cfg.get('scale', 255.),
                         source=path, bs=bs, device=device)
    try:
        with torch.inference_mode(): out = pred.model(torch.zeros(1, 3, cfg['size'], cfg['size'], device=pred.device))
    except Exception as e: raise ModelError(f'the model of {path} fails on a {cfg["size"]}x{cfg["size"]} image ({_short(e)})') from None
    if tuple(out.shape) != (1, len(cfg['classes'])):
        raise ModelError(f'the model of {path} gives {tuple(out.shape)} outputs for {len(cfg["classes"])} classes')
    return pred


def _load_pkl(path, device='cpu', bs=256):
    "`LearnerPredictor` of a fastai export. `load_learner` unpickles: it runs code from the file, so trusted files only"
    from fastai.learner import load_learner, Learner
    cpu = torch.device(device).type == 'cpu'
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # fastai's pickle warning: our CLI help says .pkl files must be trusted
            learn = load_learner(path, cpu=cpu)
    except AttributeError as e:
        if "attribute 'dls'" in str(e): raise ModelError(f'not an exported fastai Learner: {path} ({_short(e)})') from None
        raise ModelError(f'cannot load {path} as an exported fastai Learner ({_short(e)})') from None
    except Exception as e:
        raise ModelError(f'cannot load {path} as an exported fastai Learner: truncated, corrupt or another kind of file ({_short(e, 160)})') from None
    if not isinstance(learn, Learner): raise ModelError(f'not an exported fastai Learner: {path} holds a {type(learn).__name__}')
    check_finite(learn.model, path)
    return LearnerPredictor(learn, source=path, bs=bs)

def shipped_models():
    "{name: path of its .json} of the models shipped in `SHIPPED`, sorted by name"
    return {p.stem: p for p in sorted(Path(SHIPPED).glob('*.json')) if p.name != 'index.json'}

def _shipped(name=None):
    "The .json of shipped model `name`, or of the one index.json gives as `name` (None: 'best'), else None"
    models, idx = shipped_models(), Path(SHIPPED)/'index.json'
    if name in models: return models[name]
    try: alias = json.loads(idx.read_text()) if idx.is_file() else {}
    except (OSError, ValueError) as e: raise ModelError(f'unreadable list of shipped models {idx} ({_short(e)})') from None
    target = alias.get(name or 'best') if isinstance(alias, dict) else None
    if target is None:
        if name is None: raise ModelError('no shipped model in this install; pass a model path or run folder')
        return None
    if target not in models: raise ModelError(f'{idx} names {target!r} as {name or "best"!r}, but there is no {target}.json beside it')
    return models[target]

def _is_learner(o): return hasattr(o, 'dls') and hasattr(o, 'get_preds') and hasattr(o, 'model')

def load_model(path=None, allow_module=False, device='cpu', bs=256):
    "A `Predictor` of `path`: a `.pkl` (fastai export; trusted files only), a `.safetensors`/`.json` (weights-only), a run folder, a Learner, or a shipped model's name (None: the best shipped)"
    if isinstance(path, Predictor): return path
    if _is_learner(path): return LearnerPredictor(path, bs=bs)
    if path is None: path = _shipped()
    elif isinstance(path, str) and Path(path).name == path and not os.path.exists(path): path = _shipped(path) or path
    p = Path(path)
    if p.is_dir():  # a run folder: the safe format where there is one
        found = next((p/n for n in ('model.json', 'model.safetensors', 'model.pkl') if (p/n).is_file()), None)
        if found is None: raise ModelError(f'no model in folder {p}: expected model.json, model.safetensors or model.pkl')
        p = found
    if not p.exists(): raise ModelError(f'no such model file: {p}')
    ext = p.suffix.lower()
    if ext == '.pkl': return _load_pkl(p, device, bs)
    if ext in ('.safetensors', '.json'): return _load_safe(p, allow_module, device, bs)
    raise ModelError(f'unknown model file type: {p}; give a model.safetensors or model.json (weights-only) or a model.pkl (fastai export)')

def predict(model_path, images, topk=1, tta=False, allow_module=False):
    "`Prediction`s of `images` (image files, folders, PIL images or arrays) by the model at `model_path` (see `load_model`)"
    return load_model(model_path, allow_module=allow_module).predict(images, topk=topk, tta=tta)

# ------------------------------------------------------------------------------------------------------------- CLI

def cli(model, images, topk=1, as_json=False, tta=False, bs=256, allow_module=False, out=None, err=None):
    "The command line's work, callable from code: print the predictions; 0 if all succeeded, 1 if an image failed, 2 if no model"
    out, err = out or sys.stdout, err or sys.stderr
    def fail(msg): print(f'fastcifar.predict: error: {msg}', file=err, flush=True)
    if not images: fail('no images given: pass image files or folders after the model'); return 2
    if bs < 1: fail(f'--bs {bs}: must be 1 or more'); return 2
    try: pred = load_model(model, allow_module=allow_module, bs=bs)
    except ModelError as e: fail(e); return 2
    try: pred._check_topk(topk)
    except ValueError as e: fail(f'--{e}'); return 2
    n = bad = 0
    try:
        for p in pred.iter_predict(images, topk=topk, tta=tta):
            n += 1
            if not p.ok: bad += 1; fail(p.error)
            if as_json: print(json.dumps(p.to_dict()), file=out)
            elif p.ok: print('\t'.join([p.path] + [f'{c}\t{q:.4f}' for c, q in zip(p.classes, p.probs)]), file=out)
    except ModelError as e: out.flush(); fail(e); return 2
    out.flush()
    if bad: fail(f'{bad} of {n} images could not be predicted'); return 1
    return 0

def _names_model(a):
    "Whether the command line's first argument names a model (file, run folder, shipped name) rather than an image"
    p = Path(a)
    if p.suffix.lower() in ('.pkl', '.safetensors', '.json'): return True
    if p.is_dir(): return any((p/n).is_file() for n in ('model.json', 'model.safetensors', 'model.pkl'))
    return p.suffix.lower() not in IMAGE_EXTS  # anything else (a shipped name, a mistyped path) is taken as the model

@call_parse
def main(
    *images:str,               # image files (PNG, JPEG, ...; any size, RGB/L/RGBA/P) or folders to search for them; a model first, as before --model existed, still works
    model:str=None,            # NAME|PATH: .safetensors or .json (weights-only, safe), .pkl (fastai export: loading runs code from it, trusted files only), a run folder, or a shipped model's name (default: the best shipped model)
    topk:int=1,                # print the K most likely classes of each image
    json:bool=False,           # JSON Lines output: one object per image, {"path","class","prob","topk"} or {"path","error"}
    tta:bool=False,            # average each prediction with its mirror image's (flip test-time augmentation)
    bs:int=256,                # images per batch
    allow_module:bool=False,   # let a .json name a model class outside the fastcifar package (importing it runs its code)
):
    "Predict the CIFAR-10 class of images; one tab-separated line per image: path, class, probability (exit 1 if an image failed, 2 if the model did)."
    # Without --model, a first argument that names a model (a model file, a run folder, a name) is the model, as the
    # command line took it before --model existed; images alone mean the best shipped model
    if model is None and images and _names_model(images[0]): model, images = images[0], images[1:]
    sys.exit(cli(model, images, topk=topk, as_json=json, tta=tta, bs=bs, allow_module=allow_module))
