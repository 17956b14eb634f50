"""Train a recipe (the seed's by default) as a fastai Learner: `python -m fastcifar.train --help`.

`train()` reads top to bottom: settings, run folder, checkpoint, data, learner, callbacks, restore, fit, export.
"""
import importlib, os, pickle, platform, subprocess, sys, warnings, numpy as np, torch
from functools import partial
from pathlib import Path
from torch import nn
from fastcore.xtras import ContextManagers
from fastai.learner import Learner
from fastai.optimizer import OptimWrapper
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat
from fastai.metrics import accuracy
from fastai.torch_core import set_seed, default_device, rank_distrib, trainable_params, norm_bias_params
from fastai.callback.schedule import fit_one_cycle  # noqa: F401 (patches Learner)
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.fp16 import MixedPrecision
from .model import Net, n_params, MODEL_VERSION
from .data import cifar_dls
from .augment import BatchAug
from .sources import DataError
from .recipe import SCHEDULE, SETTINGS, RECIPES, RecipeError, recipe_of, resolve, parser, rerun_command
from .files import RunFolder, RunFolderError, no_space
from .export import ModelError, export
from .callbacks import CPUAutocast, SmoothLossOnDevice, History, Checkpoint, RunArtefacts, NonFiniteLoss, ReleaseFreedMemory, WeightEMA, LoaderEpoch, set_rng_state
from .memory import reuse_freed_memory
from .machine import cpu_name
from .distributed import world_size, setup, rank0_first, from_rank0, data_parallel

__all__ = ['SCHEDULE', 'SETTINGS', 'RECIPES', 'TrainError', 'Interrupted', 'seed_opt', 'fit_seed_cycle', 'get_model',
           'pick_precision', 'wd_groups', 'seed_learner', 'cpu_name', 'train', 'main']

class TrainError(ValueError):
    "A bad training argument, run folder or checkpoint: the message is one line saying what to do."

class Interrupted(TrainError):
    "The run was stopped by Ctrl-C; its last checkpoint is kept."

def seed_opt(params, lr=0.05, nesterov=False, **kw):
    "torch's SGD, as the seed used it: L2 weight decay added to the gradient of every parameter; `nesterov`: Nesterov momentum."
    # fastai's own SGD decouples weight decay and skips BN/bias, which is not the seed's recipe
    return OptimWrapper(params, opt=torch.optim.SGD, lr=lr, momentum=SCHEDULE['momentum'], nesterov=nesterov, **kw)

def fit_seed_cycle(learn, epochs, lr=0.05, cbs=None, start_epoch=0, warmup=SCHEDULE['pct_start']):
    "`fit_one_cycle` with torch `OneCycleLR`'s shape (warm-up 0.3 of the steps, div 25, final div 1e4, momentum 0.85-0.95)."
    s = SCHEDULE
    learn.fit_one_cycle(epochs, lr, div=s['div'], div_final=s['div']*s['final_div'], pct_start=warmup,
                        moms=s['moms'], cbs=cbs, start_epoch=start_epoch)

def get_model(spec=None, dropout=None):
    "An `nn.Module` from 'module' (its `Net`) or 'module:callable'; the seed's `Net` (with `dropout`) by default."
    if not spec: return Net() if dropout is None else Net(dropout)
    mod, _, name = spec.partition(':')
    try: obj = getattr(importlib.import_module(mod), name or 'Net')
    except (ImportError, AttributeError) as e: raise TrainError(f'--model {spec}: cannot load it ({e}); give a module or module:callable that returns an nn.Module') from None
    m = obj() if callable(obj) and not isinstance(obj, nn.Module) else obj
    if not isinstance(m, nn.Module): raise TrainError(f'--model {spec}: gave {type(m).__name__}, not an nn.Module')
    return m

def _cpu_bf16():
    try: return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception: return False

def pick_precision(precision='auto', device=None):
    "The precision to train in: 'auto' is bf16 where the device supports it (fp16 on older GPUs), else fp32."
    cuda = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu')).type == 'cuda'
    if precision not in ('auto', 'fp32', 'bf16', 'fp16'):
        raise TrainError(f'--precision {precision}: unknown; choose auto, fp32, bf16 or fp16')
    if precision == 'auto':
        if cuda: return 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
        return 'bf16' if _cpu_bf16() else 'fp32'
    if precision == 'fp16' and not cuda: raise TrainError('--precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32')
    return precision

def wd_groups(model, wd_bn_bias=True):
    "The optimizer's parameter groups: all trainable parameters, or (not `wd_bn_bias`) the rest, then BatchNorm's and the biases."
    ps = trainable_params(model)
    if wd_bn_bias: return ps
    # fastai's own `wd_bn_bias=False` marks those parameters in a state only fastai's optimizers read; torch's SGD
    # needs them in a group of their own, whose weight decay `seed_learner` sets to 0
    nb = {id(p) for p in norm_bias_params(model)}
    rest, bn = [p for p in ps if id(p) not in nb], [p for p in ps if id(p) in nb]
    return [rest, bn] if rest and bn else ps

def seed_learner(dls, model=None, wd=1e-4, precision='auto', path='.', channels_last=True, label_smoothing=0., nesterov=False,
                 wd_bn_bias=True, compile=False):
    "The seed's Learner: Net, cross-entropy, accuracy, torch SGD with L2 weight decay (not on BatchNorm and biases if not `wd_bn_bias`), in `precision`; `compile`: the model under torch.compile."
    loss = LabelSmoothingCrossEntropyFlat(eps=label_smoothing) if label_smoothing else CrossEntropyLossFlat()
    model = model if model is not None else Net()
    # in place (`nn.Module.compile`): the model keeps its type and state-dict keys, so checkpoints, the weights' average
    # and the export are those of the plain model, and a run may resume with or without it. fastai has no compile option.
    if compile: model.compile()
    split = isinstance(wd_groups(model, wd_bn_bias)[0], list)
    learn = Learner(dls, model, loss_func=loss, metrics=accuracy, opt_func=partial(seed_opt, nesterov=nesterov),
                    splitter=partial(wd_groups, wd_bn_bias=wd_bn_bias), wd=[wd, 0.] if split else wd, path=path, model_dir='.')
    learn.add_cb(SmoothLossOnDevice())  # no host sync a batch on a GPU for fastai's smoothed loss
    if getattr(dls.train, 'alt_flip', None) is not None: learn.add_cb(LoaderEpoch())  # alternating flips follow the epoch
    prec = pick_precision(precision, dls.device)
    cuda = torch.device(dls.device or 'cpu').type == 'cuda'
    if not cuda: reuse_freed_memory(); learn.add_cb(ReleaseFreedMemory())
    if channels_last: learn.add_cb(ChannelsLast())
    if prec == 'bf16': learn.add_cb(MixedPrecision(amp_mode='bf16') if cuda else CPUAutocast())
    if prec == 'fp16': learn.add_cb(MixedPrecision())
    learn.precision = prec
    return learn

# ------------------------------------------------------------------------------------------------ what a run records

def _versions():
    import fastai, albumentations, fastcore
    from importlib.metadata import version  # torchvision's version without importing it (see fastcifar.data)
    return dict(python=platform.python_version(), torch=torch.__version__, torchvision=version('torchvision'),
                fastai=fastai.__version__, fastcore=fastcore.__version__, albumentations=albumentations.__version__)

def _commit():
    "The git commit of this code (with '+dirty' if it has changes), or None outside a git checkout."
    root = Path(__file__).resolve().parents[1]
    try:
        git = lambda *a: subprocess.run(['git', *a], cwd=root, capture_output=True, text=True, timeout=10)
        c = git('rev-parse', 'HEAD')
        if c.returncode: return None
        return c.stdout.strip() + ('+dirty' if git('status', '--porcelain', '--untracked-files=no').stdout.strip() else '')
    except (OSError, subprocess.SubprocessError): return None

def _device_name(dev):
    if torch.device(dev).type == 'cuda': return torch.cuda.get_device_name(torch.device(dev))
    n = torch.get_num_threads()
    return f"CPU: {cpu_name()}, {n} thread{'s' if n > 1 else ''}"

def _workers(workers, device):
    "DataLoader workers: 0 on the CPU (workers compete with the training threads for 2 cores), else up to 8."
    if workers is not None: return workers
    cores = (os.cpu_count() or 1)//int(os.environ.get('LOCAL_WORLD_SIZE', 1))  # shared by this machine's processes
    return 0 if torch.device(device or 'cpu').type == 'cpu' else min(8, max(1, cores - 1))

# ------------------------------------------------------------------------------------------------------ the steps

_OLD = dict(compile=False, recipe='seed-readme', label_smoothing=0., dropout=0.05, nesterov=False, ema=0., wd_bn_bias=True, warmup=SCHEDULE['pct_start'], cutout=16, aug_spec='readme', flip='random', aug='albumentations', valid='test', world_size=1)  # what older checkpoints lack

def _settings(kw):
    "Every setting of the run, checked: given > recipe > default."
    if kw.get('model') and kw.get('dropout') is not None:
        raise TrainError(f"--dropout sets fastcifar's Net; set it inside {kw['model']} instead")
    try: return resolve(**{k: v for k, v in kw.items() if v is not None})
    except RecipeError as e: raise TrainError(e) from None

def _open_folder(cfg, rank):
    "Rank 0 opens (creates, locks, or moves aside) the run folder; every rank gets its path, or the same error."
    folder, err = None, None
    if not rank:
        try: folder = RunFolder(cfg['out'], cfg['resume'], cfg['overwrite'])
        except RunFolderError as e: err = str(e)
    path, err = from_rank0((str(folder.path) if folder else None, err))
    if err: raise TrainError(err)
    return folder, Path(path)

# numpy arrays and scalars as checkpoints of fastcifar 2007a1b and before hold them (random states, fastai's scheduled
# hyper-parameters): data constructors only, allowed by name; nothing else a file names is called
_NUMPY_DATA = [np.zeros(1).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32)), type(np.dtype(np.float64)),
               np.float64(0).__reduce__()[0]]

def _load_checkpoint(out):
    "The checkpoint in run folder `out`, loaded as tensors and plain data only (no code from the file runs)."
    f = out/'checkpoint.pth'
    try:
        with torch.serialization.safe_globals(_NUMPY_DATA), warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torch's notes on pickle protocols: the outcome is what matters
            ck = torch.load(f, map_location='cpu', weights_only=True)  # a GPU run's resumes on the CPU too
    except pickle.UnpicklingError:
        raise TrainError(f'cannot resume from {f}: it holds objects other than tensors and plain data, so it was not loaded (nothing in it ran); start the run again with --overwrite') from None
    except Exception as e:
        why = ' '.join(str(e).split())[:160]
        raise TrainError(f'cannot resume from {f}: corrupt, truncated or not a fastcifar checkpoint ({type(e).__name__}: {why}); start the run again with --overwrite') from None
    if not isinstance(ck, dict) or not {'model', 'opt', 'epoch', 'config', 'history', 'rng'} <= set(ck):
        raise TrainError(f'cannot resume from {f}: not a fastcifar checkpoint; start the run again with --overwrite')
    return ck

def _run_config(cfg, ck, ws, given):
    "The settings to train with: `cfg`, or on resume the checkpoint's; of those `given`, only machine settings may differ."
    if ck is None: return dict(cfg, world_size=ws, command=rerun_command(cfg))
    run = {**_OLD, **ck['config']}
    if 'seed' in run and 'random_seed' not in run: run['random_seed'] = run.pop('seed')  # older name
    run['recipe'] = recipe_of(run)  # its name today (recipes were renamed)
    for s in SETTINGS:
        if s.machine or s.name not in given or cfg[s.name] == run.get(s.name): continue
        raise TrainError(f"--resume: {s.flag} {cfg[s.name]} differs from the run's {run.get(s.name)}; resume without it, or start a new run")
    for k in ('workers', 'data', 'compile'):  # this machine's settings, not the recipe's
        if k in given: run[k] = cfg[k]
    if run['world_size'] != ws: raise TrainError(f"--resume: the run trained on {run['world_size']} processes; resume it on as many")
    return run

def _data(cfg, rank):
    with rank0_first():  # rank 0 decodes and caches (or downloads) the data once
        dls = cifar_dls(cfg['data'], bs=cfg['bs'], workers=_workers(cfg['workers'], default_device()), frac=cfg['frac'],
                        seed=cfg['random_seed'] + rank, cutout=cfg['cutout'], aug=cfg['aug_spec'], executor=cfg['aug'], valid=cfg['valid'],
                        flip=cfg['flip'], flip_seed=cfg['random_seed'])  # every process mirrors an image alike
    return dls

def _learner(cfg, dls, out):
    return seed_learner(dls, get_model(cfg['model'], cfg['dropout']), cfg['wd'], cfg['precision'], path=out,
                        label_smoothing=cfg['label_smoothing'], nesterov=cfg['nesterov'], wd_bn_bias=cfg['wd_bn_bias'],
                        compile=cfg['compile'])

def _aug(dls):
    "The augmentation of the training DataLoader (its random state is checkpointed): albumentations' or `BatchAug`, or None."
    augs = [t.aug for t in dls.train.after_item.fs if hasattr(t, 'aug')] + [t for t in dls.train.after_batch.fs if isinstance(t, BatchAug)]
    return augs[0] if augs else None

def _info(cfg, learn, dls, resumed):
    "What results.json records beside the figures: every setting, the model, machine, versions, commit, commands."
    info = {s.name: cfg.get(s.name) for s in SETTINGS if not s.machine}
    info.update(model=cfg['model'] or 'fastcifar.model:Net', model_version=None if cfg['model'] else MODEL_VERSION,
                params=n_params(learn.model), world_size=cfg['world_size'], effective_bs=cfg['bs']*cfg['world_size'],
                device=_device_name(dls.device or 'cpu'), precision=learn.precision, compile=cfg['compile'], data=dls.source,
                versions=_versions(), commit=_commit(), command=cfg['command'])
    if resumed: info['resumed'] = True
    return info

def _restore(learn, ck, aug, rank, ema=None):
    "Weights, optimizer, the weights' average and every random state from checkpoint `ck`; the epoch to start from."
    if ck is None: return 0
    if ema is not None: ema.load_state(ck['ema'])
    learn.create_opt()
    try: learn.model.load_state_dict(ck['model']); learn.opt.load_state_dict(ck['opt'])
    except (RuntimeError, ValueError, KeyError) as e:
        raise TrainError(f'cannot resume {learn.path}: its checkpoint is of another model or optimizer ({" ".join(str(e).split())[:160]}); start a new run') from None
    set_rng_state(learn, ck.get('rng_ranks', [ck['rng']])[rank], aug)
    return ck['epoch'] + 1

def _quiet(learn, show):
    "No output if not `show`; in a log file (stdout not a terminal or notebook) one line an epoch, not a redrawn bar."
    if not show: return [learn.no_bar(), learn.no_logging()]
    # fastprogress draws its bar into files too (its `printing()` tests `stdout.isatty` without calling it)
    from fastprogress.core import IN_NOTEBOOK
    return [] if IN_NOTEBOOK or sys.stdout.isatty() else [learn.no_bar()]

def _fit(learn, cfg, cbs, start, show):
    "Fit the one-cycle schedule from epoch `start`; a user's fault or Ctrl-C becomes one line."
    out = learn.path
    try:
        with data_parallel(learn), ContextManagers(_quiet(learn, show)):
            fit_seed_cycle(learn, cfg['epochs'], cfg['lr'], cbs=cbs, start_epoch=start, warmup=cfg['warmup'])
    except KeyboardInterrupt:
        if (out/'checkpoint.pth').is_file(): raise Interrupted(f'interrupted; resume with --resume --out {out}') from None
        raise Interrupted(f'interrupted before the first epoch ended; start again with --overwrite --out {out}') from None
    except ValueError as e:
        if 'Expected more than 1 value per channel' not in str(e): raise
        n = len(learn.dls.train_ds)
        raise TrainError(f'a training batch of one image ({n} images, --bs {cfg["bs"]}): the model\'s BatchNorm cannot train on it; choose another --bs') from None
    except OSError as e:
        if no_space(e): raise TrainError(f'no space left on the device of {out}; free space and resume with --resume --out {out}') from None
        raise

def train(data=None, out=None, show=True, **settings):
    "Train a recipe (see `fastcifar.recipe.SETTINGS`) on CIFAR-10 into a run folder; returns the Learner."
    cfg = _settings(dict(settings, data=None if data is None else str(data), out=None if out is None else str(out)))
    try: setup()  # join the process group of `accelerate launch`; nothing in a single process
    except ImportError as e: raise TrainError(e) from None
    ws, rank = world_size(), rank_distrib()
    folder, out = _open_folder(cfg, rank)
    try:
        ck = _load_checkpoint(out) if cfg['resume'] else None
        cfg = _run_config(cfg, ck, ws, {k for k, v in dict(settings, data=data).items() if v is not None})
        set_seed(cfg['random_seed'] + rank, reproducible=True)  # rank 0 draws as a single process does
        dls = _data(cfg, rank)
        learn = _learner(cfg, dls, out)
        aug = _aug(dls)
        hist = History(rows=ck['history'] if ck else None)
        ema = WeightEMA(cfg['ema']) if cfg['ema'] else None
        cbs = [hist, Checkpoint(aug=aug, config=cfg, ema=ema), RunArtefacts(_info(cfg, learn, dls, ck is not None))] + ([ema] if ema else [])
        learn.resume_from = _restore(learn, ck, aug, rank, ema)
        _fit(learn, cfg, cbs, learn.resume_from, show)
        if len(hist.rows) == cfg['epochs'] and not rank:
            export(learn, model_args=None if cfg['model'] else dict(dropout=cfg['dropout']),
                   model_spec=cfg['model'] and (cfg['model'] if ':' in cfg['model'] else f"{cfg['model']}:Net"))
            folder.commit()  # the run it replaced, if any, goes only now
        return learn
    except BaseException:
        if folder: folder.abandon()  # nothing written yet: leave the folder as it was
        raise
    finally:
        if folder: folder.close()

def main(argv=None):
    "`python -m fastcifar.train`: the settings as flags; one line and a non-zero exit for any fault a user can cause."
    args = parser(description="Train a CIFAR-10 recipe with fastai; write history, curves, confusion matrix, results and the model.").parse_args(argv)
    try: train(**vars(args))
    except Interrupted as e: print(f'fastcifar.train: {e}', file=sys.stderr); sys.exit(130)
    except (TrainError, DataError, NonFiniteLoss, ModelError) as e: sys.exit(f'fastcifar.train: error: {_line(e)}')
    except OSError as e:
        if not no_space(e): raise
        sys.exit(f'fastcifar.train: error: no space left on the device ({e.filename or "writing the run"}); free space and resume with --resume --out the run folder')

def _line(e):
    "The message of `e` as one line: fastai prefixes one raised in a callback with a line naming the callback."
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    return lines[-1] if lines else type(e).__name__

if __name__ == '__main__': main()
