"""The exported model, both formats: fastai's `learn.export` (model.pkl) and the weights-only safetensors + JSON.

Training writes both with `export`; inference reads the weights-only format with `read_safe`, which unpickles
nothing and imports no fastai. The JSON carries what rebuilds the model and its preprocessing (the class as
module:Class with its constructor arguments, classes, size, scale, mean, std), as nanoGPT's checkpoints carry
`model_args`.
"""
import hashlib, importlib, json, re
from pathlib import Path
import numpy as np, torch
from .files import atomic_write
from .images import SIZE
from .model import bare_model

__all__ = ['FORMAT', 'FORMAT_VERSION', 'ModelError', 'bare_model', 'export', 'export_safe', 'read_safe', 'check_finite', 'ship']

FORMAT, FORMAT_VERSION = 'fastcifar-weights', 2  # `model.json`'s format name and version (2: model_args)
_SPEC = re.compile(r'[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*')

class ModelError(Exception):
    "A model file that cannot be used: a one-line message naming the problem and the path"
    def __init__(self, msg): super().__init__(' '.join(str(msg).split()))

def _short(e, n=300):
    "`e` as one line of at most `n` characters, with its type"
    s = ' '.join(f'{type(e).__name__}: {e}'.split())
    return s if len(s) <= n else s[:n-3] + '...'


def check_finite(model, where):
    "Raise `ModelError` if any weight or statistic of `model` is NaN or infinite (a diverged run)."
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad: raise ModelError(f'{where} has NaN or infinite weights ({", ".join(bad[:3])}{", ..." if len(bad) > 3 else ""}): the run diverged; train it again')

# ---------------------------------------------------------------------------------------------------------- saving

def _preprocessing(learn):
    "(scale, mean, std) of the Learner's batch transforms (IntToFloatTensor's divisor, Normalize's stats)"
    scale, mean, std = 255., [0., 0., 0.], [1., 1., 1.]
    for t in getattr(getattr(learn.dls, 'after_batch', None), 'fs', []):
        name = type(t).__name__
        if name == 'IntToFloatTensor': scale = float(t.div)
        if name == 'Normalize' and getattr(t, 'mean', None) is not None:
            # float32 values written as their shortest decimal (0.4914, not 0.49140000343): the same float32 back;
            # .cpu(): on a GPU the stats live on the device with the batch
            mean, std = ([float(np.format_float_positional(o, unique=True)) for o in torch.as_tensor(v).detach().flatten().float().cpu().numpy()]
                         for v in (t.mean, t.std))
    return scale, mean, std

def export_safe(learn, path_dir='.', name='model', model_args=None, model_spec=None):
    "Write `learn`'s weights-only format to `path_dir`: `name.safetensors` (model state_dict) and `name.json`"
    from safetensors.torch import save
    m, d = bare_model(learn.model), Path(path_dir)
    check_finite(m, 'the model')
    cls = type(m)
    spec = model_spec or f'{cls.__module__}:{cls.__qualname__}'  # the class, or the callable that built the model
    if not _SPEC.fullmatch(spec) or spec.startswith('__main__:'):
        raise ModelError(f'cannot export {spec} weights-only: the model class must be importable by name (module:Class)')
    scale, mean, std = _preprocessing(learn)
    cfg = dict(format=FORMAT, version=FORMAT_VERSION, model=spec, model_args=dict(model_args or {}), classes=[str(c) for c in learn.dls.vocab],
               size=SIZE, mode='RGB', resize='bilinear', scale=scale, mean=mean, std=std)
    # contiguous CPU copies: channels_last weights and shared storage are not storable as-is
    sd = {k: v.detach().to('cpu', copy=True).contiguous() for k, v in m.state_dict().items()}
    data = save(sd, metadata={'fastcifar': json.dumps(cfg)})  # the description rides in the header too
    full = dict(cfg, weights=f'{name}.safetensors', sha256=hashlib.sha256(data).hexdigest(),
                params=sum(p.numel() for p in m.parameters()))
    d.mkdir(parents=True, exist_ok=True)
    atomic_write(d/f'{name}.safetensors', lambda p: p.write_bytes(data))
    atomic_write(d/f'{name}.json', lambda p: p.write_text(json.dumps(full, indent=2) + '\n'))
    return d/f'{name}.safetensors', d/f'{name}.json'


def export(learn, path_dir=None, model_args=None, model_spec=None):
    "Write both formats of `learn` to `path_dir` (default `learn.path`): model.pkl without training callbacks, and the weights-only pair."
    # absolute: fastai's `export` writes to learn.path/fname, which doubles a relative path (runs/r/runs/r/model.pkl)
    d = Path(path_dir or learn.path).absolute()
    # fastcifar's callbacks are training-only (history, checkpoints, CPU autocast), as is fastai's DistributedTrainer
    train_only = [cb for cb in learn.cbs if type(cb).__module__.startswith('fastcifar.') or type(cb).__name__ == 'DistributedTrainer']
    with learn.removed_cbs(train_only): atomic_write(d/'model.pkl', learn.export)  # whole or absent, as every file of a run
    return export_safe(learn, d, model_args=model_args, model_spec=model_spec)

# --------------------------------------------------------------------------------------------------------- loading

def _read_bytes(p, what='model file'):
    try: return Path(p).read_bytes()
    except FileNotFoundError: raise ModelError(f'no such {what}: {p}') from None
    except OSError as e: raise ModelError(f'cannot read {what} {p} ({e.strerror or _short(e)})') from None

def _st_header(data, where):
    "The JSON header of safetensors bytes `data`, checked (a file that is not safetensors fails here, unparsed)"
    n = int.from_bytes(data[:8], 'little') if len(data) >= 8 else -1
    if n < 2 or n > len(data) - 8:
        raise ModelError(f'not a safetensors file, or truncated: {where} (no valid header; a .pkl/.pt is not weights-only)')
    try: h = json.loads(data[8:8+n])
    except (ValueError, UnicodeDecodeError): h = None
    if not isinstance(h, dict): raise ModelError(f'not a safetensors file, or corrupt: {where} (bad header)')
    return h

def _check_cfg(cfg, where):
    "`cfg` if it describes a fastcifar weights-only model, else a ModelError saying what is wrong"
    bad = lambda why: ModelError(f'not a fastcifar model description: {where} ({why}; export one with fastcifar.predict.export_safe)')
    if not isinstance(cfg, dict): raise bad(f'holds a JSON {type(cfg).__name__}, not an object')
    if cfg.get('format') != FORMAT: raise bad(f'format is {cfg.get("format")!r}, not {FORMAT!r}')
    v = cfg.get('version')
    if not isinstance(v, int) or v < 1: raise bad(f'bad version {v!r}')
    if v > FORMAT_VERSION:
        raise ModelError(f'{where} is format version {v}, newer than this fastcifar reads ({FORMAT_VERSION}); upgrade fastcifar')
    cl = cfg.get('classes')
    if not isinstance(cl, list) or len(cl) < 2 or not all(isinstance(c, str) for c in cl) or len(set(cl)) != len(cl):
        raise bad('"classes" must be a list of two or more distinct names')
    for k in ('mean', 'std'):
        o = cfg.get(k)
        if not isinstance(o, list) or len(o) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in o):
            raise bad(f'"{k}" must be a list of 3 numbers (one per RGB channel)')
    if not all(x > 0 for x in cfg['std']): raise bad('"std" must be positive')
    if not isinstance(cfg.get('size'), int) or not 1 <= cfg['size'] <= 4096: raise bad('"size" must be a positive integer')
    if not isinstance(cfg.get('scale', 255.), (int, float)) or not cfg.get('scale', 255.) > 0: raise bad('"scale" must be positive')
    if not isinstance(cfg.get('model'), str): raise bad('"model" must be a module:Class string')
    if not isinstance(cfg.get('model_args', {}), dict): raise bad('"model_args" must be an object of keyword arguments')
    return cfg

def _build(spec, where, allow_module=False, args=None):
    "A fresh model of the class named by `spec` ('package.module:Class')"
    if not _SPEC.fullmatch(spec): raise ModelError(f'bad model spec {spec!r} in {where}: expected package.module:Class')
    mod, name = spec.split(':')
    # Importing a module runs its code: a model file must not be able to make us import anything it likes. Only
    # fastcifar's own modules are imported unless the user vouches for the module with allow_module (--allow-module).
    if not allow_module and mod != 'fastcifar' and not mod.startswith('fastcifar.'):
        raise ModelError(f'{where} names the model {spec}, outside the fastcifar package; importing it would run its '
                         f'code: pass --allow-module (allow_module=True) only if you trust it')
    try:
        obj = importlib.import_module(mod)
        for a in name.split('.'): obj = getattr(obj, a)
    except Exception as e: raise ModelError(f'cannot import the model {spec} named in {where} ({_short(e)})') from None
    # a fastcifar nn.Module class only: calling any other callable a file names would run code of the file's choosing;
    # a user's model factory (a `--model module:callable` run) needs allow_module, by which the user vouches for it
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module) or allow_module and callable(obj)):
        raise ModelError(f'{spec} named in {where} is not an nn.Module class')
    try: m = obj(**(args or {}))
    except Exception as e: raise ModelError(f'cannot build the model {spec} named in {where} ({_short(e)})') from None
    if not isinstance(m, torch.nn.Module): raise ModelError(f'{spec} named in {where} gives a {type(m).__name__}, not an nn.Module')
    return m

def read_safe(path, allow_module=False):
    "(model, description) of a `.json` (and the weights it names) or a `.safetensors` (its header, else the `.json` beside it)"
    from safetensors.torch import load as st_load  # parses a header and copies raw tensors: no pickle, no code
    path = Path(path)
    if path.suffix.lower() == '.json':
        try: cfg = json.loads(_read_bytes(path))
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelError(f'not a fastcifar model description: {path} (invalid JSON: {e})') from None
        cfg = _check_cfg(cfg, path)
        w = cfg.get('weights')
        if not isinstance(w, str) or not w or Path(w).name != w or w in ('.', '..'):
            raise ModelError(f'not a fastcifar model description: {path} ("weights" must name a file beside it)')
        wpath = path.with_name(w)
        data = _read_bytes(wpath, 'weights file')
        sha = cfg.get('sha256')
        if sha is not None and hashlib.sha256(data).hexdigest() != sha:
            raise ModelError(f'weights {wpath} do not match {path} (sha256 differs): corrupt, or from another export')
        _st_header(data, f'{wpath} (the weights {path} names)')
    else:
        wpath, data = path, _read_bytes(path)
        meta = _st_header(data, path).get('__metadata__') or {}
        if 'fastcifar' in meta:
            try: cfg = json.loads(meta['fastcifar'])
            except (ValueError, TypeError): cfg = None
            cfg = _check_cfg(cfg, f'the header of {path}')
        else:
            side = path.with_suffix('.json')
            if not side.exists():
                raise ModelError(f'no model description for {path}: its header has none and there is no {side.name} beside it')
            try: cfg = _check_cfg(json.loads(_read_bytes(side)), side)
            except (ValueError, UnicodeDecodeError) as e:
                raise ModelError(f'not a fastcifar model description: {side} (invalid JSON: {e})') from None
    try: sd = st_load(data)
    except Exception as e: raise ModelError(f'corrupt or truncated weights file: {wpath} ({_short(e)})') from None
    model = _build(cfg['model'], path, allow_module, cfg.get('model_args') or {})
    try: model.load_state_dict(sd, strict=True)
    except Exception as e:
        raise ModelError(f'the weights in {wpath} do not fit {cfg["model"]} ({_short(e, 200)})') from None
    check_finite(model, wpath)
    return model.eval(), cfg

_NAME = re.compile(r'[a-z0-9][a-z0-9_.-]{0,63}')

def ship(run, name, folder=None, best=False, replace=False):
    "Copy run folder `run`'s weights-only model into the shipped models (`folder`, default the package's) as `name`."
    # <name>.json carries the run's results.json as "results" (the demo and the shipped-weights test read it);
    # `best`: index.json names it the default of load_model(); an existing name is kept unless `replace`.
    from .predict import SHIPPED  # the inference side owns where shipped models live
    run, folder = Path(run), Path(folder or SHIPPED)
    if not _NAME.fullmatch(name) or name == 'index': raise ModelError(f'{name!r}: a shipped name is lower-case letters, digits, . _ -, not "index"')
    for f in ('model.json', 'model.safetensors', 'results.json'):
        if not (run/f).is_file(): raise ModelError(f'{run} has no {f}: ship a finished run folder')
    read_safe(run/'model.json')  # loads, fits the class and is finite, or says why not
    if not replace and (folder/f'{name}.json').exists(): raise ModelError(f'{folder/name}.json exists; pass replace=True (--replace) to replace it')
    cfg = json.loads((run/'model.json').read_text())
    from .recipe import recipe_of  # the recipe's name today (runs made before a rename record the old one)
    res = json.loads((run/'results.json').read_text())
    cfg.update(weights=f'{name}.safetensors', results=res, run=run.name, recipe=recipe_of(res))
    data = (run/'model.safetensors').read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder/f'{name}.safetensors', lambda p: p.write_bytes(data))
    atomic_write(folder/f'{name}.json', lambda p: p.write_text(json.dumps(cfg, indent=2) + '\n'))
    if best: atomic_write(folder/'index.json', lambda p: p.write_text(json.dumps({'best': name}) + '\n'))
    return folder/f'{name}.json'

if __name__ == '__main__':
    from fastcore.script import call_parse
    @call_parse
    def main(run:str,             # a finished run folder (model.json, model.safetensors, results.json)
             name:str,            # the shipped name: load_model(NAME), predict --model NAME
             best:bool=False,     # make it the default model (index.json)
             replace:bool=False,  # replace a shipped model of the same name
             folder:str=None):    # where (default: the package's fastcifar/weights/, or $FASTCIFAR_WEIGHTS)
        "Ship a run's weights-only model with the package (`python -m fastcifar.export RUN NAME [--best]`)."
        import sys
        try: print(ship(run, name, folder, best, replace))
        except ModelError as e: sys.exit(f'fastcifar.export: error: {e}')
