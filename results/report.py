"""results/README.md, generated from the committed run folders and the seed's table: `python results/report.py`."""
import csv, json, os, re, numpy as np
from collections import Counter
from pathlib import Path
from types import SimpleNamespace as NS
from fastcifar.recipe import RECIPES as _RECIPES
from fastcifar.data import AUGS

__all__ = ['RESULTS', 'ROOT', 'EPOCHS', 'KEYS', 'LEGACY', 'RECIPES', 'SEED_RECIPE', 'IMPROVED', 'pct', 'pts', 'mean_sd',
           'seed_table', 'settings', 'machine', 'load_run', 'load_runs', 'is_seed', 'changes', 'command', 'group_runs',
           'seed_group', 'improved_group', 'seed_distance', 'headline', 'report', 'derived_blocks', 'sync_readme', 'main']

RESULTS = Path(__file__).resolve().parent
ROOT = RESULTS.parent
EPOCHS = (1, 5, 10, 15, 20, 25, 30)  # columns of the per-epoch table
ONE_RUN_TARGET = 0.82                # this project's target for one run of the seed's recipe on its JPEG copy
GOAL = 1.5                           # points `--recipe improved` set out to gain over the seed's recipe

# A run's recipe settings: what makes two runs the same experiment (the seed aside).
KEYS = ('recipe', 'wd', 'label_smoothing', 'dropout', 'cutout', 'aug_spec', 'model_version')
# What a results.json written before a setting was recorded ran with: the seed's dropout and 16x16 hole (no flag
# changed them yet), its README's augmentation, and the Net's first layout (Dropout after the depthwise conv too).
LEGACY = dict(recipe='seed', label_smoothing=0., dropout=0.05, cutout=16, aug_spec='readme', model_version=1)
def _resolved(r):
    "A recipe's settings with `cutout` None (the augmentation's own) made the side of its one square hole, if it has one."
    aug = AUGS[r['aug_spec']]
    own = aug['hole'][0] if aug['holes'] == (1, 1) and aug['hole'][0] == aug['hole'][1] else None
    return dict(r, cutout=own if r['cutout'] is None else r['cutout'])

RECIPES = {k: _resolved(v) for k, v in _RECIPES.items()}  # what each recipe sets, from fastcifar.recipe
SEED_RECIPE, IMPROVED = RECIPES['seed'], RECIPES['improved']
_WORDS = dict(wd=lambda v: f'wd {_sci(v)}', label_smoothing=lambda v: f'label smoothing {v:g}',
              dropout=lambda v: f'dropout {v:g}', cutout=lambda v: f'cutout {v}x{v}' if v else 'no cutout',
              aug_spec=lambda v: f'augmentation {v}')

def _sci(v):
    "`v` as '5e-4', not '0.0005'."
    m, e = f'{v:e}'.split('e')
    return f"{m.rstrip('0').rstrip('.')}e{int(e)}"

def pct(x): return f'{100*x:.2f}%'
def pts(d): return f'{100*d:+.2f}'
def _flag(k, v): return f"--{k.replace('_', '-')} {_sci(v) if k == 'wd' else f'{v:g}' if isinstance(v, float) else v}"

def mean_sd(xs):
    "Mean ± sample SD (ddof 1) of fractions, in percent; the value alone for one run."
    xs = np.asarray(xs, float)
    return pct(xs[0]) if len(xs) == 1 else f'{100*xs.mean():.2f} ± {100*xs.std(ddof=1):.2f}%'

def _csv(path):
    "A CSV's columns as float arrays."
    with open(path) as f: rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}

def seed_table(path=None):
    "The seed's published per-epoch table (accuracy in fractions), or None where no copy is found."
    env = os.environ.get('FASTCIFAR_SEED_TABLE')
    cands = [path] if path else ([env] if env else []) + [RESULTS/'seed_epochs.csv', ROOT.parent/'shared'/'seed'/'epochs.csv']
    p = next((Path(c) for c in cands if Path(c).is_file()), None)
    if p is None: return None
    t = _csv(p)
    return {**t, 'train_accuracy': t['train_accuracy']/100, 'test_accuracy': t['test_accuracy']/100}

def settings(res):
    "A results.json's recipe settings, completed with what older versions ran without recording it."
    s = {k: res.get(k, LEGACY.get(k)) for k in KEYS}
    if s['cutout'] is None: s['cutout'] = RECIPES['seed' if s['aug_spec'] == 'readme' else 'seed-albu2']['cutout']
    return s

def machine(name, res, run_md, short=False):
    "Where the run's epochs ran: its folder's prefix (cpu-, gpu-, hybrid-), results.json's device, RUN.md's account."
    if not name.startswith('hybrid-'): return res['device']
    m = re.search(r'epochs (\d+)-(\d+) on a lent (NVIDIA \w+)', run_md)
    if m is None: return f"a GPU, then {res['device']}"
    return f"{m[3]}, then {res['device']}" if short else f"{m[3]} (epochs {m[1]}-{m[2]}, shared), then {res['device']}"

def load_run(path):
    "One run folder as a namespace: results, history, settings, where and when it ran."
    path = Path(path); res = json.loads((path/'results.json').read_text()); md = (path/'RUN.md').read_text()
    date = re.search(r'\d{4}-\d{2}-\d{2}', md.splitlines()[0])
    return NS(name=path.name, res=res, hist=_csv(path/'history.csv'), s=settings(res), md=md,
              seed=res.get('seed', res.get('random_seed')), kind=path.name.split('-')[0],
              date=date[0] if date else '', machine=machine(path.name, res, md), short=machine(path.name, res, md, True))

def load_runs(folder=RESULTS): return [load_run(p.parent) for p in sorted(Path(folder).glob('*/results.json'))]

def _diff(s, base): return {k: s[k] for k in base if s[k] != base[k] and not (k == 'cutout' and s[k] is None)}
def is_seed(s): return not _diff(s, SEED_RECIPE)

def changes(s):
    "What settings `s` change from the seed's recipe, in words."
    return ', '.join(_WORDS[k](v) for k, v in _diff(s, SEED_RECIPE).items()) or "none: the seed's recipe"

def command(s):
    "The flags that give settings `s` today."
    base = RECIPES.get(s['recipe'], SEED_RECIPE)
    return ' '.join(([f"--recipe {s['recipe']}"] if s['recipe'] != 'seed' else []) + [_flag(k, v) for k, v in _diff(s, base).items()])

def _stats(runs, k): return np.array([r.res[k] for r in runs])

def group_runs(runs):
    "Runs with the same settings, as groups: the seed's recipe first, then by changes made and final accuracy."
    by = {}
    for r in runs: by.setdefault(tuple(r.s[k] for k in KEYS), []).append(r)
    gs = [NS(s=runs[0].s, runs=runs, n=len(runs), final=_stats(runs, 'final_test_accuracy'),
             tta=_stats(runs, 'final_test_accuracy_flip_tta'), train=_stats(runs, 'final_train_accuracy')) for runs in by.values()]
    return sorted(gs, key=lambda g: (not is_seed(g.s), len(_diff(g.s, SEED_RECIPE)), g.final.mean(), g.s['model_version']))

def seed_group(gs):
    "The seed's recipe: its group with the most runs (the later Net layout on a tie)."
    return max((g for g in gs if is_seed(g.s)), key=lambda g: (g.n, g.s['model_version']), default=None)

def improved_group(gs):
    "`--recipe improved` as it stands now: its group with the most runs."
    return max((g for g in gs if g.s['recipe'] == 'improved' and not _diff(g.s, IMPROVED)), key=lambda g: g.n, default=None)

def _curve(runs, k): return np.mean([r.hist[k] for r in runs], axis=0)

def seed_distance(runs, seed):
    "Mean |difference| from the seed's table over its epochs (test, train) and the train-test gap at the end, as fractions."
    te, tr = _curve(runs, 'test_accuracy'), _curve(runs, 'train_accuracy')
    return np.abs(te - seed['test_accuracy']).mean(), np.abs(tr - seed['train_accuracy']).mean(), tr[-1] - te[-1]

def _table(head, rows): return '\n'.join(['| ' + ' | '.join(head) + ' |', '|' + '---|'*len(head)] + ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows])
def _link(r): return f'[{r.name}]({r.name}/RUN.md)'
def _label(g): return f"the seed's recipe (layout {g.s['model_version']})" if is_seed(g.s) else changes(g.s)
def _machines(runs): return '; '.join(m + (f' (x{n})' if n > 1 else '') for m, n in Counter(r.short for r in runs).items())
def _seeds(g): return ', '.join(str(r.seed) for r in g.runs)

def headline(runs=None, seed=...):
    "The three-row results table for the top README: the seed's recipe, `--recipe improved`, the seed as published."
    runs = load_runs() if runs is None else runs; seed = seed_table() if seed is ... else seed
    gs = group_runs(runs); rows = []
    for label, g in (("the seed's recipe (Net layout {v})", seed_group(gs)), ('`--recipe improved`', improved_group(gs))):
        if g: rows.append([label.format(v=g.s['model_version']), f'**{mean_sd(g.final)}**', mean_sd(g.tta),
                           f"{g.n} (seed{'s'*(g.n > 1)} {_seeds(g)})", _machines(g.runs), "this project's JPEG copy (quality 75)"])
    if seed is not None: rows.append(['the seed, as published', pct(seed['test_accuracy'][-1]), '', '1', 'Tesla T4', 'lossless CIFAR-10'])
    return _table(['', 'test accuracy (final)', 'with flip TTA', 'runs', 'hardware', 'data'], rows)

def _group_table(gs):
    head = ['recipe', 'wd', 'label smoothing', 'dropout', 'cutout', 'augmentation', 'Net layout', 'runs', 'seeds',
            'final test accuracy', 'with flip TTA', 'final train accuracy', 'machines', 'dates']
    return _table(head, [[f"`{g.s['recipe']}`", _sci(g.s['wd']), f"{g.s['label_smoothing']:g}", f"{g.s['dropout']:g}",
                          g.s['cutout'] if g.s['cutout'] is not None else 'its own', g.s['aug_spec'], g.s['model_version'], g.n,
                          _seeds(g), f'**{mean_sd(g.final)}**', mean_sd(g.tta), mean_sd(g.train), _machines(g.runs),
                          ', '.join(sorted({r.date for r in g.runs if r.date}))] for g in gs])

def _median_epoch(r): return f"{np.median(r.hist['seconds']):.1f}" if r.kind in ('cpu', 'gpu') else ''

def _run_table(gs):
    head = ['run', 'change from the seed\'s recipe (flags today)', 'final test accuracy', 'best (epoch)', 'with flip TTA',
            'final train accuracy', 's / epoch (median)', 'where', 'precision']
    return _table(head, [[_link(r), f"{changes(r.s)}" + (f" (`{command(r.s)}`)" if command(r.s) else ''),
                          f"**{pct(r.res['final_test_accuracy'])}**", f"{pct(r.res['best_test_accuracy'])} ({r.res['best_epoch']})",
                          pct(r.res['final_test_accuracy_flip_tta']), pct(r.res['final_train_accuracy']), _median_epoch(r),
                          r.machine, r.res['precision']] for g in gs for r in g.runs])

def _epoch_table(gs, seed):
    def row(label, acc): return [label] + [pct(acc[e-1]) for e in EPOCHS]
    rows = [] if seed is None else [row("the seed, as published (its table): test accuracy", seed['test_accuracy']),
                                    row("the seed, as published (its table): train accuracy", seed['train_accuracy'])]
    for g in gs:
        for r in g.runs:
            if len(r.hist['epoch']) < EPOCHS[-1]: continue
            rows.append(row(f'{r.name} ({changes(r.s)}): test accuracy', r.hist['test_accuracy']))
            if is_seed(r.s): rows.append(row(f'{r.name}: train accuracy (augmented)', r.hist['train_accuracy']))
    return _table(['epoch'] + [str(e) for e in EPOCHS], rows)

def _full(g, seed): return all(len(r.hist['epoch']) == len(seed['epoch']) for r in g.runs)
def _span(xs): return f'{100*min(xs):.2f}-{pct(max(xs))}'
def _end(seed): return seed['train_accuracy'][-1], seed['test_accuracy'][-1]

def _seed_section(gs, seed):
    if seed is None: return ("The seed's per-epoch table was not found (results/seed_epochs.csv, $FASTCIFAR_SEED_TABLE or "
                             "../shared/seed/epochs.csv): no comparison.\n")
    E, (tr, te) = len(seed['epoch']), _end(seed)
    ds = [(g, seed_distance(g.runs, seed)) for g in gs if _full(g, seed)]
    rows = [["the seed, as published (its table)", '', '', '', f'{pts(tr - te)} ({pct(tr)} - {pct(te)})']]
    rows += [[f'{_label(g)}: mean of {g.n} runs', g.n, f'{100*d[0]:.2f}', f'{100*d[1]:.2f}', pts(d[2])] for g, d in ds if g.n > 1]
    rows += [[_link(r), 1, *(f'{100*x:.2f}' for x in d[:2]), pts(d[2])] for g, _ in ds for r in g.runs for d in [seed_distance([r], seed)]]
    (gt, dt), (gr, dr), (gg, dg) = [min(ds, key=lambda o: f(o[1])) for f in (lambda d: d[0], lambda d: d[1], lambda d: abs(d[2] - (tr - te)))]
    albu2 = '' if any(g.s['aug_spec'] == 'albu2' for g in gs) else \
        "No run of `--recipe seed-albu2` (the seed's calls as albumentations 2.x runs them) is committed yet."
    head = ['run or group', 'runs', f'test: mean abs. difference, epochs 1-{E}', f'train: mean abs. difference, epochs 1-{E}',
            f'train - test, epoch {E}']
    return f"""Which reconstruction of the seed's augmentation comes closer to what the seed ran: each run's curve (and each
group's mean curve) against the seed's published table, over its {E} epochs. Distances in points of accuracy; the gap is
train minus test accuracy at epoch {E}.

{_table(head, rows)}

Closest test curve: {_label(gt)} ({100*dt[0]:.2f} points). Closest train curve: {_label(gr)} ({100*dr[1]:.2f} points).
Closest end gap to the seed's {pts(tr - te)}: {_label(gg)} ({pts(dg[2])}). {albu2}
The seed trained and tested on lossless CIFAR-10 (torchvision's download); every run here on this project's quality-75
JPEG copy, whose damage costs accuracy by itself, so each distance holds the data's effect as well as the augmentation's.
"""

def _results_prose(gs, seed):
    g = seed_group(gs); E = len(g.runs[0].hist['epoch'])
    below = [x for x in sorted(g.runs, key=lambda x: x.res['final_test_accuracy']) if x.res['final_test_accuracy'] < ONE_RUN_TARGET]
    over = {x.name: x.hist['epoch'][x.hist['train_accuracy'] >= x.hist['test_accuracy']].astype(int) for x in g.runs}
    over = '; '.join(f"epoch{'s' * (len(v) > 1)} {', '.join(map(str, v))} of {k}" for k, v in over.items() if len(v))
    ends = all(x.hist['train_accuracy'][-1] < x.hist['test_accuracy'][-1] for x in g.runs)
    pub = end = ''
    if seed is not None:
        tr, te = _end(seed)
        pub = (f"The seed's own {pct(te)} was measured on lossless CIFAR-10: {100*(te - g.final.mean()):.2f} points above this "
               "mean, a gap that mixes the data with anything else that differs (see the comparison with its table below). ")
        end = f", where the seed's table ends at {pct(tr)} train against {pct(te)} test"
    return f"""fastcifar's runs of the seed's recipe (Net layout {g.s['model_version']}) reach **{mean_sd(g.final)}** final test
accuracy (mean ± sample SD of {g.n} runs, seeds {_seeds(g)}; {_span(g.final)}) and {mean_sd(g.tta)} with flip TTA (each test
image and its mirror, softmax averaged). {pub}Single runs spread that much:
{', '.join(f"{x.name} ({pct(x.res['final_test_accuracy'])})" for x in below) or 'no run'} end{'s' * (len(below) == 1)} below the
{pct(ONE_RUN_TARGET)} this project set as its target for one run, which {g.n - len(below)} of the {g.n} meet. Runs differ in the
device's arithmetic and, with DataLoader workers, in the augmentation each image drew. Runs that moved between machines
(hybrid-*) report no comparable time; a run's `train_seconds` can include pauses (see its RUN.md), so the table gives
median epoch times.

Train accuracy (measured on augmented batches, with dropout active) {'ends below' if ends else 'does not end below'} test
accuracy in every run of the seed's recipe here ({mean_sd(g.train)} against {mean_sd(g.final)} at epoch {E}{end}){
'; before that it reaches test accuracy only at ' + over if over else ', at every epoch'}{
': on this copy the recipe as written underfits' if ends else ''}.
"""

def _ablation(gs, ref):
    def vs(g, k): return f'{mean_sd(getattr(g, k))} ({pts(getattr(g, k).mean() - getattr(ref, k).mean())})'
    rows = [[changes(g.s), f"`{command(g.s)}`" if command(g.s) else '', g.s['model_version'], g.n, vs(g, 'final'), vs(g, 'tta'),
             mean_sd(g.train)] for g in gs]
    return _table(["change from the seed's recipe", 'flags today', 'Net layout', 'runs', "final test accuracy (vs the seed's recipe)",
                   "with flip TTA (vs the seed's recipe with flip TTA)", 'final train accuracy'], rows)

def _improved_prose(imp, ref, seed):
    d, dt, sd = imp.final.mean() - ref.final.mean(), imp.tta.mean() - ref.final.mean(), ref.final.std(ddof=1)
    met = lambda x: 'met' if 100*x >= GOAL else 'not met'
    pub = '' if seed is None else (f" The seed's own {pct(_end(seed)[1])} (on lossless images) is "
                                   f"{'not ' if imp.tta.mean() < _end(seed)[1] else ''}reached on this JPEG copy.")
    return f"""Result, {imp.n} run{'s' * (imp.n > 1)} (seed{'s' * (imp.n > 1)} {_seeds(imp)}): **{mean_sd(imp.tta)} with flip TTA**,
{mean_sd(imp.final)} without: {pts(dt)} points over the seed's recipe's plain mean ({pct(ref.final.mean())}), {pts(d)} without
TTA, and {pts(imp.tta.mean() - ref.tta.mean())} flip TTA against flip TTA ({pct(ref.tta.mean())}). So the +{GOAL}-point goal is
{met(dt)} with flip TTA as part of the recipe, and {met(d)} without it.{pub} The seed's recipe spreads {100*sd:.2f} points
(SD) from run to run; the gain without TTA is {d/sd:.1f} of those SDs, but {'it is one run' if imp.n == 1 else f'over {imp.n} runs'}
of the improved recipe.
"""

def _ablation_notes(gs, ref, seed, imp):
    sd, cut = ref.final.std(ddof=1), SEED_RECIPE['cutout']
    def d(g): return g.final.mean() - ref.final.mean()
    same = [g for g in gs if g is not ref and g.s['cutout'] == cut and g.s['model_version'] == ref.s['model_version']]
    nodrop, beyond = [g for g in same if g.s['dropout'] == 0], [g for g in gs if g is not ref and abs(d(g)) > 2*sd]
    alone = {k for g in gs for k in _diff(g.s, SEED_RECIPE) if len(_diff(g.s, SEED_RECIPE)) == 1}
    b = [f"- With the seed's {cut}x{cut} cutout, {'; '.join(f'{changes(g.s)} ({pts(d(g))})' for g in same)} "
         f"{'all stay' if all(abs(d(g)) <= 2*sd for g in same) else 'do not all stay'} within two SDs ({200*sd:.2f} points) of the "
         "seed's recipe" + (f"; without dropout the Net fits the augmented training data better (final train accuracy "
                            f"{', '.join(pct(g.train.mean()) for g in nodrop)} against {pct(ref.train.mean())})." if nodrop else '.')]
    if beyond: b.append(f"- Beyond two SDs: {'; '.join(f'{changes(g.s)} ({pts(d(g))}, train {pct(g.train.mean())})' for g in beyond)}.")
    if seed is not None:
        fit = '; '.join(changes(g.s) for g in gs if g.train.mean() >= _end(seed)[0]) or 'no setting'
        b.append(f"- The seed's table ends at {pct(_end(seed)[0])} train accuracy against {pct(_end(seed)[1])} test. Here final train "
                 f"accuracy reaches the seed's only with {fit}; with the {cut}x{cut} cutout it ends at "
                 f"{_span(np.concatenate([g.train for g in gs if g.s['cutout'] == cut]))}. That suggests the seed's own cutout bit "
                 f"less than its stated {cut}x{cut} hole; its code and library version are not available to check it (see the "
                 "comparison with its table above).")
    todo = [f"{_WORDS[k](v)} alone on the seed's recipe" for k, v in _diff(IMPROVED, SEED_RECIPE).items() if k not in alone]
    todo += ['EMA of weights, other schedules'] + (['more seeds of the improved recipe (`bench/gpu.sh` is ready to run them on a '
                                                     'lent GPU)'] if imp and imp.n < ref.n else [])
    return '\n'.join(b + [f"- Not measured: {'; '.join(todo)}."]) + '\n'

def _beyond_prose(gs, ref, seed):
    imp = improved_group(gs)
    intro = f"""An opt-in recipe (`--recipe improved`; the default stays the seed's): the same Net and parameters, epochs, batch
and one-cycle schedule, with {changes(IMPROVED)}, evaluated with flip TTA (every run's `results.json` reports it beside
the plain accuracy; `python -m fastcifar.predict --tta` does the same for new images). Each setting is a flag; a flag
given wins over the recipe. Deltas below are against the seed's recipe ({ref.n} runs, layout {ref.s['model_version']}):
plain accuracy against its plain mean, flip TTA against its flip-TTA mean.
"""
    return '\n'.join([intro] + ([_improved_prose(imp, ref, seed)] if imp else []) + [_ablation(gs, ref) + '\n',
                                                                                      _ablation_notes(gs, ref, seed, imp)])

def _chosen(gs, ref):
    seeds = sorted({str(r.seed) for g in gs if g is not ref for r in g.runs})
    sizes = ', '.join(f'{c}x{c}' if c else 'none' for c in sorted({g.s['cutout'] for g in gs if g.s['cutout'] is not None}, reverse=True))
    return f"""## How these settings were chosen

The settings of `--recipe improved` ({changes(IMPROVED)}) were chosen by looking at test accuracy: one run of each
change in the table above (seed {', '.join(seeds)}), including the cutout sizes tried ({sizes}). The test set served as
the validation set, so the gains of `--recipe improved` are optimistic estimates of what it gives on images it was not
tuned on. Settings chosen from now on will be picked on a validation split held out of the training images, with the
test set read once, at the end.
"""

def report(runs=None, seed=...):
    "The text of results/README.md (`seed` None: without the seed's table)."
    runs = load_runs() if runs is None else runs; seed = seed_table() if seed is ... else seed
    gs = group_runs(runs); ref = seed_group(gs)
    curves = [min(g.runs, key=lambda r: (r.kind == 'hybrid', r.kind != 'gpu')) for g in (ref, improved_group(gs)) if g]
    return f"""# Results

Generated by `python results/report.py` from the run folders below (`results.json`, `history.csv`, `RUN.md`) and the
seed's published per-epoch table (`results/seed_epochs.csv`, a copy of `../shared/seed/epochs.csv`): edit that script,
not this file. Test accuracy is on the test images of this project's CIFAR-10 copy (quality-75 JPEGs of the real
images); train accuracy on the augmented training batches, dropout active. Mean ± sample SD (n - 1) where a group has
two or more runs.

{headline(runs, seed)}

## Runs grouped by recipe

{_group_table(gs)}

{_results_prose(gs, seed)}
## Every run

{_run_table(gs)}

{chr(10).join(f'![{x.name}: curves]({x.name}/curves.png) ![{x.name}: confusion matrix]({x.name}/confusion_matrix.png)' for x in curves)}

## Against the seed's own per-epoch table

{_seed_section(gs, seed)}
## Per epoch

{_epoch_table(gs, seed)}

## Beyond the seed: what each change gave

{_beyond_prose(gs, ref, seed)}
{_chosen(gs, ref)}"""

def derived_blocks():
    "The top README's generated blocks, by marker name: the headline, the flags table, the architecture table."
    from fastcifar.recipe import markdown_table as flags
    from fastcifar.model import markdown_table as layers
    return dict(headline=headline(), flags=flags(), layers=layers())

def sync_readme(text):
    "`text` (the top README) with each `<!-- name -->` ... `<!-- /name -->` block replaced by its generated content."
    for name, block in derived_blocks().items():
        a, b = f'<!-- {name} -->', f'<!-- /{name} -->'
        i, j = text.index(a) + len(a), text.index(b)
        text = text[:i] + '\n' + block + '\n' + text[j:]
    return text

def _write(path, text):
    tmp = Path(f'{path}.tmp')
    tmp.write_text(text); os.replace(tmp, path)
    print(f'wrote {path}')

def main(out=RESULTS/'README.md'):
    "Write results/README.md and the top README's generated blocks, atomically (temporary files renamed into place)."
    _write(out, report())
    top = ROOT/'README.md'
    _write(top, sync_readme(top.read_text()))

if __name__ == '__main__': main()
