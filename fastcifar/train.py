"""Train the seed's recipe as a fastai Learner: `python -m fastcifar.train --help`."""
import importlib, os, platform, shutil, sys, time, torch
from pathlib import Path
from torch import nn
from fastcore.script import call_parse
from fastcore.xtras import ContextManagers
from fastai.learner import Learner
from fastai.optimizer import OptimWrapper
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat
from fastai.metrics import accuracy
from fastai.torch_core import set_seed, default_device, rank_distrib
from fastai.callback.schedule import fit_one_cycle  # noqa: F401 (patches Learner)
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.fp16 import MixedPrecision
from .model import Net, n_params, DROPOUT, MODEL_VERSION
from .data import cifar_dls, AUGS
from .sources import DataError
from .callbacks import CPUAutocast, History, Checkpoint, RunArtefacts, NonFiniteLoss, set_rng_state
from .predict import export_safe
from .distributed import world_size, setup, barrier, rank0_first, from_rank0, distrib_cbs, data_parallel, dump_rank

__all__ = ['SEED', 'RECIPES', 'TrainError', 'seed_opt', 'fit_seed_cycle', 'get_model', 'pick_precision', 'seed_learner',
           'train', 'main']

# The seed's recipe, each as the seed's PyTorch script set it.
SEED = dict(
    epochs=30, bs=128, lr=0.05,  # max LR of the one-cycle schedule
    wd=1e-4,                     # L2 through the gradient (torch SGD), on every parameter including BN
    pct_start=0.3, div=25.,      # torch OneCycleLR defaults: warm-up fraction, initial LR = lr/div
    final_div=1e4,               # torch's final LR = initial LR / final_div (fastai's div_final is lr_max/final)
    moms=(0.95, 0.85, 0.95),     # momentum cycled inversely to the LR (torch OneCycleLR cycle_momentum)
)

# What `--recipe` sets where its flag is not given. `improved` is opt-in: same Net, parameters, epochs and schedule.
RECIPES = dict(
    seed=dict(label_smoothing=0., wd=SEED['wd'], dropout=DROPOUT, aug_spec='readme', cutout=None),
    # the seed's calls as albumentations 2.x runs them (1-2 holes of 3-6 px, black; constant borders): see data.AUGS
    **{'seed-albu2': dict(label_smoothing=0., wd=SEED['wd'], dropout=DROPOUT, aug_spec='albu2', cutout=None)},
    improved=dict(label_smoothing=0.1,  # soft targets
                  wd=5e-4,              # stronger L2 (still through the gradient, on every parameter)
                  dropout=0.,           # the seed's recipe underfits: train accuracy (augmented) stays below test
                  aug_spec='readme',    # flip and shift-scale-rotate with reflect-101 borders
                  cutout=0),            # no cutout hole (the seed's: 16x16 pixels); the largest gain measured
)

class TrainError(ValueError):
    "A bad training argument or run folder: the message is one line saying what to do."

def seed_opt(params, lr=SEED['lr'], **kw):
    "torch's SGD, as the seed used it: L2 weight decay added to the gradient of every parameter."
    # fastai's own SGD decouples weight decay and skips BN/bias, which is not the seed's recipe
    return OptimWrapper(params, opt=torch.optim.SGD, lr=lr, momentum=0.9, **kw)

def fit_seed_cycle(learn, epochs, lr=SEED['lr'], cbs=None, start_epoch=0):
    "`fit_one_cycle` with torch `OneCycleLR`'s shape (pct_start 0.3, div 25, final div 1e4, momentum 0.85-0.95)."
    learn.fit_one_cycle(epochs, lr, div=SEED['div'], div_final=SEED['div']*SEED['final_div'],
                        pct_start=SEED['pct_start'], moms=SEED['moms'], cbs=cbs, start_epoch=start_epoch)

def get_model(spec=None, dropout=DROPOUT):
    "An `nn.Module` from 'module' (its `Net`) or 'module:callable'; the seed's `Net` (with `dropout`) by default."
    if not spec: return Net(dropout)
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

def seed_learner(dls, model=None, wd=SEED['wd'], precision='auto', path='.', channels_last=True, label_smoothing=0.):
    "The seed's Learner: Net, cross-entropy, accuracy, torch SGD with L2 weight decay, in `precision`."
    loss = LabelSmoothingCrossEntropyFlat(eps=label_smoothing) if label_smoothing else CrossEntropyLossFlat()
    learn = Learner(dls, model if model is not None else Net(), loss_func=loss,
                    metrics=accuracy, opt_func=seed_opt, wd=wd, path=path, model_dir='.')
    learn.recorder.train_metrics = True  # train accuracy per epoch, as the seed's table has it
    prec = pick_precision(precision, dls.device)
    cuda = torch.device(dls.device or 'cpu').type == 'cuda'
    if channels_last: learn.add_cb(ChannelsLast())
    if prec == 'bf16': learn.add_cb(MixedPrecision(amp_mode='bf16') if cuda else CPUAutocast())
    if prec == 'fp16': learn.add_cb(MixedPrecision())
    learn.precision = prec
    return learn

def _versions():
    import fastai, albumentations, fastcore, torchvision
    return dict(python=platform.python_version(), torch=torch.__version__, torchvision=torchvision.__version__,
                fastai=fastai.__version__, fastcore=fastcore.__version__, albumentations=albumentations.__version__)

def _cpu_name():
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()

def _device_name(dev):
    if torch.device(dev).type == 'cuda': return torch.cuda.get_device_name(torch.device(dev))
    return f'CPU: {_cpu_name()}, {torch.get_num_threads()} threads'

def _workers(workers, device):
    "DataLoader workers: 0 on the CPU (workers compete with the training threads for 2 cores), else up to 8."
    if workers is not None: return workers
    cores = (os.cpu_count() or 1)//int(os.environ.get('LOCAL_WORLD_SIZE', 1))  # shared by this machine's processes
    return 0 if torch.device(device or 'cpu').type == 'cpu' else min(8, max(1, cores - 1))

_RULES = dict(epochs=(lambda v: v >= 1, '1 or more'), bs=(lambda v: v >= 1, '1 or more'), lr=(lambda v: v > 0, 'above 0'),
              wd=(lambda v: v >= 0, '0 or more'), workers=(lambda v: v is None or v >= 0, '0 or more'),
              frac=(lambda v: 0 < v <= 1, 'above 0 and at most 1'),
              label_smoothing=(lambda v: 0 <= v < 1, '0 or more and below 1'), dropout=(lambda v: 0 <= v < 1, '0 or more and below 1'),
              cutout=(lambda v: v is None or 0 <= v <= 32, 'from 0 (no cutout) to 32 pixels'),
              aug_spec=(lambda v: v in AUGS, ' or '.join(AUGS)))

def _check_args(**kw):
    for k, v in kw.items():
        ok, want = _RULES[k]
        if not ok(v): raise TrainError(f"--{k.replace('_', '-')} {v}: must be {want}")

def _run_folder(out, resume, overwrite):
    out = Path(out) if out else Path('runs')/from_rank0(time.strftime('%Y%m%d-%H%M%S'))  # one folder for every rank
    ckpt = out/'checkpoint.pth'
    if resume:
        if not ckpt.exists(): raise TrainError(f'--resume: no checkpoint at {ckpt}; start a new run without --resume')
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise TrainError(f'run folder {out} already holds a run; pass --resume to continue it, --overwrite to replace it, or another --out')
    return out, ckpt

_DEFAULTS = dict(recipe='seed', label_smoothing=0., dropout=DROPOUT, cutout=16, aug_spec='readme', world_size=1)  # settings a checkpoint of an older version may lack

def _command():
    "The command line that runs this process, as typed (`python -m fastcifar.train ...`, not this file's path)."
    argv = list(sys.argv)
    if argv and Path(argv[0]).resolve() == Path(__file__).resolve(): argv[0:1] = ['python', '-m', 'fastcifar.train']
    return ' '.join(argv)

def _quiet(learn, show):
    "No output if not `show`; in a log file (stdout not a terminal or notebook) one line an epoch, not a redrawn bar."
    if not show: return [learn.no_bar(), learn.no_logging()]
    # fastprogress draws its bar into files too (its `printing()` tests `stdout.isatty` without calling it)
    from fastprogress.core import IN_NOTEBOOK
    return [] if IN_NOTEBOOK or sys.stdout.isatty() else [learn.no_bar()]

def _export(learn):
    "Write `model.pkl` (fastai `export`, without the training-only callbacks) and the weights-only safe format."
    with learn.removed_cbs([cb for cb in learn.cbs if isinstance(cb, (History, Checkpoint, RunArtefacts, CPUAutocast, *distrib_cbs()))]):
        learn.export('model.pkl')
    export_safe(learn, learn.path)

def train(data=None, out=None, epochs=SEED['epochs'], bs=SEED['bs'], lr=SEED['lr'], wd=None, seed=42,
          precision='auto', workers=None, resume=False, model=None, overwrite=False, frac=1.0, recipe='seed',
          label_smoothing=None, dropout=None, cutout=None, aug_spec=None, show=True):
    "Train the seed's recipe (or `recipe`) on CIFAR-10 and write the run folder `out`; returns the Learner."
    if recipe not in RECIPES: raise TrainError(f"--recipe {recipe}: unknown; choose {' or '.join(RECIPES)}")
    if model and dropout is not None: raise TrainError(f"--dropout sets fastcifar's Net; set it inside {model} instead")
    r = RECIPES[recipe]  # a flag given wins over its recipe's setting
    wd, label_smoothing, dropout, cutout, aug_spec = [r[k] if v is None else v for k, v in
        (('wd', wd), ('label_smoothing', label_smoothing), ('dropout', dropout), ('cutout', cutout), ('aug_spec', aug_spec))]
    _check_args(epochs=epochs, bs=bs, lr=lr, wd=wd, workers=workers, frac=frac, label_smoothing=label_smoothing,
                dropout=dropout, cutout=cutout, aug_spec=aug_spec)
    try: setup()  # join the process group of `accelerate launch`; nothing in a single process
    except ImportError as e: raise TrainError(e) from None
    ws, rank = world_size(), rank_distrib()
    out, ckpt_path = _run_folder(out, resume, overwrite)
    ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=False) if resume else None  # our own file (a GPU run's resumes on the CPU too)
    cfg = {**_DEFAULTS, **ckpt['config']} if resume else dict(data=None if data is None else str(data), epochs=epochs, bs=bs, lr=lr,
                                             wd=wd, seed=seed, precision=precision, workers=workers, model=model, frac=frac,
                                             recipe=recipe, label_smoothing=label_smoothing, dropout=dropout, cutout=cutout, aug_spec=aug_spec, world_size=ws,
                                             command=_command())
    if resume and workers is not None: cfg['workers'] = workers  # this machine's setting, not the recipe's: may change
    if cfg['world_size'] != ws: raise TrainError(f'--resume: the run in {out} trained on {cfg["world_size"]} processes; resume it on as many')
    barrier()  # every rank has checked the run folder before rank 0 changes it
    # rank 0 draws as a single process does; each other rank its own augmentations (and DataLoader worker seeds)
    set_seed(cfg['seed'] + rank, reproducible=True)
    with rank0_first():  # rank 0 extracts and caches (or downloads) the data once
        dls = cifar_dls(cfg['data'], bs=cfg['bs'], workers=_workers(cfg['workers'], default_device()), frac=cfg['frac'],
                        seed=cfg['seed'] + rank, cutout=cfg['cutout'], aug=cfg['aug_spec'])
    dls.train.drop_last = False  # the seed's 391 steps an epoch: the last, partial batch is trained on too
    mdl = get_model(cfg['model'], cfg['dropout'])
    if not rank:  # rank 0 writes the run folder
        if not resume and out.exists() and overwrite: shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
    learn = seed_learner(dls, mdl, cfg['wd'], cfg['precision'], path=out, label_smoothing=cfg['label_smoothing'])
    aug = dls.train.after_item.fs.filter(lambda t: hasattr(t, 'aug')).map(lambda t: t.aug)
    aug = aug[0] if len(aug) else None
    info = dict(recipe=cfg['recipe'], label_smoothing=cfg['label_smoothing'], dropout=cfg['dropout'], cutout=cfg['cutout'],
                aug_spec=cfg['aug_spec'], model_version=MODEL_VERSION if not cfg['model'] else None, params=n_params(learn.model),
                lr=cfg['lr'], bs=cfg['bs'], world_size=ws, effective_bs=cfg['bs']*ws, wd=cfg['wd'], seed=cfg['seed'],
                device=_device_name(dls.device or 'cpu'), precision=learn.precision, data=dls.source,
                model=cfg['model'] or 'fastcifar.model:Net', versions=_versions(), command=cfg.get('command') or _command())
    if resume: info['resumed_with'] = _command()  # `command` stays the one that started the run
    cbs = [History(rows=ckpt['history'] if resume else None), Checkpoint(aug=aug, config=cfg),
           RunArtefacts(info, export_fn=_export)]
    learn.resume_from = 0
    if resume:
        learn.create_opt()
        learn.model.load_state_dict(ckpt['model']); learn.opt.load_state_dict(ckpt['opt'])
        set_rng_state(learn, ckpt.get('rng_ranks', [ckpt['rng']])[rank], aug)
        learn.resume_from = ckpt['epoch'] + 1
    with data_parallel(learn), ContextManagers(_quiet(learn, show)):
        fit_seed_cycle(learn, cfg['epochs'], cfg['lr'], cbs=cbs, start_epoch=learn.resume_from)
    dump_rank(learn, aug)  # tests only (env FASTCIFAR_RANK_DUMP)
    return learn

@call_parse
def main(
    data:str=None,        # CIFAR-10: a folder in fastai's layout, a .tgz of it, or cifar-10-batches-py (default: $FASTCIFAR_DATA, else download)
    out:str=None,         # run folder (default: runs/<date-time>)
    epochs:int=SEED['epochs'],  # epochs of the one-cycle schedule
    bs:int=SEED['bs'],    # batch size
    lr:float=SEED['lr'],  # max learning rate of the one-cycle schedule
    wd:float=None,        # L2 weight decay, added to every parameter's gradient as the seed's torch SGD did (default: 1e-4; improved 5e-4)
    seed:int=42,          # random seed
    precision:str='auto', # auto, fp32, bf16 or fp16 (auto: bf16 where supported)
    workers:int=None,     # DataLoader worker processes (default: 0 on the CPU, up to 8 with a GPU; may change on --resume)
    resume:bool=False,    # continue the interrupted run in --out from its last checkpoint
    model:str=None,       # module or module:callable giving an nn.Module (default: the seed's Net)
    overwrite:bool=False, # replace an existing run in --out
    frac:float=1.0,       # fraction of each split to use (every 1/frac-th image), for quick runs
    recipe:str='seed',    # seed (faithful; its README's augmentation), seed-albu2 (its calls under albumentations 2.x) or improved (label smoothing 0.1, wd 5e-4, no dropout, no cutout); same Net and epochs
    label_smoothing:float=None, # label smoothing (default: 0; improved 0.1)
    dropout:float=None,   # dropout after each BN'd conv of the Net (default: the seed's 0.05; improved 0)
    cutout:int=None,      # one square cutout hole of this side in pixels, 0 for none (default: the augmentation's own: seed one 16x16, seed-albu2 1-2 of 3-6 px; improved 0)
    aug_spec:str=None,    # readme or albu2: the seed's augmentation as its README says, or as albumentations 2.x ran its calls (default: the recipe's)
):
    "Train the seed's CIFAR-10 recipe with fastai and write history, curves, confusion matrix, results and model.pkl."
    try: train(data, out, epochs, bs, lr, wd, seed, precision, workers, resume, model, overwrite, frac, recipe, label_smoothing,
               dropout, cutout, aug_spec)
    except (TrainError, DataError, NonFiniteLoss) as e: sys.exit(f'fastcifar.train: error: {e}')
