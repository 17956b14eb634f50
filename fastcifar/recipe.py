"""The recipe as data: every setting of a training run, once, with its default, unit or reason and valid range.

`train()`'s keywords, the command line and its `--help`, validation, the checkpoint's config and results.json all come
from `SETTINGS`; `RECIPES` names what each recipe sets (a setting given explicitly wins over its recipe).
"""
import argparse
from dataclasses import dataclass
from .data import AUGS, SEED_AUG, FLIPS
from .model import DROPOUT
from .images import SIZE

__all__ = ['SCHEDULE', 'Setting', 'SETTINGS', 'DEFAULTS', 'RECIPES', 'RECIPE_KEYS', 'recipe_of', 'RecipeError', 'resolve', 'parser', 'rerun_command',
           'markdown_table']

# The seed's one-cycle schedule, as its PyTorch script set it: the same in every recipe; only the warm-up is a flag.
SCHEDULE = dict(
    pct_start=0.3, div=25.,  # torch OneCycleLR defaults: warm-up fraction (--warmup's default), initial LR = lr/div
    final_div=1e4,           # torch's final LR = initial LR / final_div (fastai's div_final is lr_max/final)
    moms=(0.95, 0.85, 0.95), # momentum cycled inversely to the LR (torch OneCycleLR cycle_momentum)
    momentum=0.9,            # SGD momentum outside the cycle (the seed's optimizer)
)

class RecipeError(ValueError):
    "A bad setting: the message is one line naming it and what it must be."

@dataclass(frozen=True)
class Setting:
    "One setting of a run: `ok(v)` says whether `v` is valid, `want` says what valid is; `machine`: may change on resume."
    name: str
    type: type
    default: object
    help: str
    ok: object = None
    want: str = ''
    machine: bool = False
    @property
    def flag(self): return '--' + self.name.replace('_', '-')

_pos, _nonneg, _frac = (lambda v: v >= 1), (lambda v: v >= 0), (lambda v: 0 <= v < 1)
SETTINGS = (
    Setting('data', str, None, "CIFAR-10: a folder in fastai's layout, a .tgz of it, or cifar-10-batches-py (default: $FASTCIFAR_DATA, else download; may change on --resume: the same data on another machine)", machine=True),
    Setting('out', str, None, 'run folder (default: runs/<date-time>, never an existing one)', machine=True),
    Setting('recipe', str, 'seed', 'which recipe sets the settings below that are not given', lambda v: v in RECIPES, ' or '.join(('seed', 'seed-readme', 'improved'))),
    Setting('epochs', int, 30, 'epochs of the one-cycle schedule', _pos, '1 or more'),
    Setting('bs', int, 128, 'batch size (the seed: 391 steps an epoch, the last batch partial)', _pos, '1 or more'),
    Setting('lr', float, 0.05, 'max learning rate of the one-cycle schedule', lambda v: v > 0, 'above 0'),
    Setting('warmup', float, SCHEDULE['pct_start'], 'fraction of the one-cycle schedule spent rising to the max learning rate', lambda v: 0 < v < 1, 'above 0 and below 1'),
    Setting('wd', float, None, "L2 weight decay added to the parameters' gradients, as the seed's torch SGD did", _nonneg, '0 or more'),
    Setting('wd_bn_bias', bool, None, "weight decay on BatchNorm weights and biases too, as the seed's torch SGD did (--no-wd-bn-bias: on conv and linear weights only, fastai's default)"),
    Setting('label_smoothing', float, None, 'label smoothing of the cross-entropy (0: none)', _frac, '0 or more and below 1'),
    Setting('dropout', float, None, "probability of the Net's Dropout layers", _frac, '0 or more and below 1'),
    Setting('nesterov', bool, None, "Nesterov momentum in the SGD step (--no-nesterov: the seed's plain momentum)"),
    Setting('ema', float, None, 'decay of an exponential moving average of the weights, updated every step, which validation and the exported model use (0: none, the raw weights)', _frac, '0 or more and below 1'),
    Setting('aug_spec', str, None, "the augmentation: readme (the seed's, as its README says), albu2 (the seed's calls under albumentations 2.x) or translate (flip and a whole-pixel shift of up to 3, reflect-101 borders)", lambda v: v in AUGS, ' or '.join(AUGS)),
    Setting('cutout', int, None, 'one square cutout hole of this side in pixels, 0 for none (default: the augmentation\'s own holes)', lambda v: 0 <= v <= SIZE, f'from 0 (no cutout) to {SIZE} pixels'),
    Setting('aug', str, 'albumentations', 'where the augmentation runs: albumentations (per image, the design) or batch (torch ops on whole batches, on the training device; same distributions)', lambda v: v in ('albumentations', 'batch'), 'albumentations or batch'),
    Setting('flip', str, None, "horizontal flips: random (each image each epoch, at the augmentation's probability) or alternate (each image's first flip drawn once, then mirrored every other epoch, so any two epochs show it both ways; --aug batch only)", lambda v: v in FLIPS, ' or '.join(FLIPS)),
    Setting('valid', str, 'test', 'the validation set: test (the test set, as the seed) or holdout (5,000 training images, seeded; the test set unseen: for choosing settings)', lambda v: v in ('test', 'holdout'), 'test or holdout'),
    Setting('frac', float, 1.0, 'fraction of each split to use, the same for every class (seeded), for quick runs', lambda v: 0 < v <= 1, 'above 0 and at most 1'),
    Setting('random_seed', int, 42, 'random seed of weights, order and augmentation'),
    Setting('precision', str, 'auto', 'auto, fp32, bf16 or fp16 (auto: bf16 where supported)', lambda v: v in ('auto', 'fp32', 'bf16', 'fp16'), 'auto, fp32, bf16 or fp16'),
    Setting('compile', bool, False, "compile the model with torch.compile (inductor's default mode): the same layers and dropout law, fused kernels; the first batches of training and of validation compile (about a minute on 2 cores; may change on --resume)", machine=True),
    Setting('model', str, None, 'module or module:callable giving an nn.Module (default: the seed\'s Net)'),
    Setting('workers', int, None, 'DataLoader worker processes (default: 0 on the CPU, up to 8 with a GPU)', _nonneg, '0 or more', machine=True),
    Setting('resume', bool, False, 'continue the interrupted run in --out from its last checkpoint', machine=True),
    Setting('overwrite', bool, False, 'replace the run in --out, keeping the old one until the new one has finished', machine=True),
)
_BY_NAME = {s.name: s for s in SETTINGS}
DEFAULTS = {s.name: s.default for s in SETTINGS}  # None: from the recipe (RECIPES) or decided at run time

# What each recipe sets where its setting is not given. Same Net, parameters, epochs and schedule in each.
RECIPES = {
    # the seed's code as it most likely ran (its 1.x-style calls under albumentations 2.x): its curves are the closer
    # to the seed's published per-epoch table (results/README.md); named 'seed-albu2' by runs before the rename
    'seed': dict(wd=1e-4, wd_bn_bias=True, label_smoothing=0., dropout=DROPOUT, nesterov=False, ema=0., aug_spec=SEED_AUG, cutout=None, flip='random'),
    # the seed as its README says (one 16x16 hole, reflect-101 borders); named 'seed' by runs before the rename
    'seed-readme': dict(wd=1e-4, wd_bn_bias=True, label_smoothing=0., dropout=DROPOUT, nesterov=False, ema=0., aug_spec='readme', cutout=None, flip='random'),
    'improved': dict(wd=5e-4, wd_bn_bias=True,  # stronger L2 (still through the gradient, on every parameter)
                     label_smoothing=0.1,  # soft targets
                     dropout=0.,         # the seed's recipe underfits: train accuracy (augmented) stays below test
                     nesterov=False, ema=0.,
                     aug_spec='readme', cutout=0,  # flip and shift-scale-rotate, no cutout hole: the largest gain measured
                     flip='random'),
}
RECIPE_KEYS = tuple(RECIPES['seed'])

def recipe_of(cfg, recipes=RECIPES):
    "The name today of the recipe that settings `cfg` are, or are nearest (fewest settings changed; its recorded name on a tie)."
    # Runs made before the rename record 'seed' for today's 'seed-readme' and 'seed-albu2' for today's 'seed': their
    # settings, not their recorded names, say which recipe they ran.
    diff = {n: sum(cfg.get(k) != v for k, v in r.items()) for n, r in recipes.items()}
    return min(diff, key=lambda n: (diff[n], n != cfg.get('recipe')))

def resolve(**kw):
    "Every setting: those given, else their recipe's, else their default; checked. Unknown names are an error."
    if bad := [k for k in kw if k not in _BY_NAME]: raise RecipeError(f'unknown setting {bad[0]!r}; the settings are: {", ".join(_BY_NAME)}')
    cfg = {s.name: kw.get(s.name, s.default) for s in SETTINGS}
    if cfg['recipe'] not in RECIPES: raise RecipeError(f"--recipe {cfg['recipe']}: unknown; choose {' or '.join(RECIPES)}")
    for k, v in RECIPES[cfg['recipe']].items():
        if cfg[k] is None: cfg[k] = v
    for s in SETTINGS:
        v = cfg[s.name]
        if v is not None and s.ok is not None and not s.ok(v): raise RecipeError(f'{s.flag} {v}: must be {s.want}')
    if cfg['flip'] == 'alternate' and cfg['aug'] != 'batch':
        raise RecipeError("--flip alternate: needs --aug batch (only its loader knows which image is which); add --aug batch")
    return cfg

def _help(s):
    per = [f'{r} {d[s.name]}' for r, d in RECIPES.items() if s.name in d]
    return s.help + (f" (recipes: {'; '.join(per)})" if per else f' (default: {s.default})' if s.default not in (None, False) else '')

def parser(prog='python -m fastcifar.train', description=''):
    "The command line of `SETTINGS`: one flag a setting, its help showing each recipe's value."
    # by hand, not fastcore's `call_parse`: that reads flags from a function's source, and here they come from a table
    p = argparse.ArgumentParser(prog=prog, description=description)
    for s in SETTINGS:
        if s.type is bool:  # a recipe's switch (default None: from the recipe) has --no-<flag> too
            p.add_argument(s.flag, action='store_true' if s.default is False else argparse.BooleanOptionalAction, help=_help(s))
        else: p.add_argument(s.flag, type=s.type, default=None, help=_help(s), metavar=s.name.upper())
    return p

def rerun_command(cfg, out_name=None):
    "A command that runs `cfg` again anywhere: its settings that differ from the defaults, no machine paths."
    from pathlib import Path
    args = []
    for s in SETTINGS:
        v = cfg.get(s.name)
        if s.machine and s.name not in ('out', 'data') or v is None or v == s.default and s.name != 'recipe': continue
        if s.name in RECIPE_KEYS and v == RECIPES[cfg['recipe']][s.name]: continue
        if s.name == 'data': v = v if not Path(v).is_absolute() else Path(v).name
        if s.name == 'out': v = f'runs/{out_name or Path(v).name}'
        args.append((s.flag if v else f'--no-{s.flag[2:]}') if s.type is bool else f'{s.flag} {v}')
    return ' '.join(['python -m fastcifar.train'] + args)

def markdown_table():
    "The settings as a Markdown table (the README's table of flags): default, each recipe's value, what it is."
    cell = lambda v: '' if v is None else f'`{v}`'
    out = ['| flag | default | ' + ' | '.join(f'`{r}`' for r in RECIPES) + ' | what |', '|---|---|' + '---|'*len(RECIPES) + '---|']
    for st in SETTINGS:
        per = [cell(RECIPES[r].get(st.name)) if st.name in RECIPE_KEYS else '' for r in RECIPES]
        default = 'from the recipe' if st.name in RECIPE_KEYS else cell(st.default)
        out.append(f'| `{st.flag}` | {default} | ' + ' | '.join(per) + f' | {st.help} |')
    return '\n'.join(out)
