"The committed runs under results/: complete, self-consistent, and quoted in results/README.md as they are."
import csv, importlib, importlib.util, json, numpy as np, pytest
from pathlib import Path
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RUNS = sorted(p.parent for p in (ROOT/'results').glob('*/results.json'))
README = (ROOT/'README.md').read_text()
RESULTS_MD = ROOT/'results'/'README.md'
REPORT = RESULTS_MD.read_text() if RESULTS_MD.exists() else ''
SEED_COPY = ROOT/'results'/'seed_epochs.csv'

def pct(x): return f'{100*x:.2f}%'
def rows(path):
    with open(path) as f: return list(csv.DictReader(f))
def section(title):
    "The lines of results/README.md's section `## title`."
    text = REPORT.split(f'\n## {title}\n', 1)[-1] if f'\n## {title}\n' in REPORT else ''
    return text.split('\n## ', 1)[0].splitlines()

@pytest.fixture(scope='module')
def report():
    "results/report.py as a module (results/ is not a package)."
    spec = importlib.util.spec_from_file_location('results_report', ROOT/'results'/'report.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

@pytest.fixture
def seed_table_env(monkeypatch):
    "Tests read the repo's copy of the seed's table, whatever $FASTCIFAR_SEED_TABLE says."
    monkeypatch.delenv('FASTCIFAR_SEED_TABLE', raising=False)

HOLDOUT_RUNS = [r for r in RUNS if json.loads((r/'results.json').read_text()).get('valid', 'test') == 'holdout']

@pytest.mark.parametrize('run', HOLDOUT_RUNS, ids=lambda p: p.name)
def test_holdout_runs_stay_out_of_the_test_figures(run):
    "A `--valid holdout` run's accuracy is on the validation split: quoted in the search section only, never as test accuracy."
    link = f'({run.name}/RUN.md)'
    for title in ('Runs grouped by recipe', 'Every run', "Against the seed's own per-epoch table"):
        assert not any(link in l for l in section(title)), title
    assert any(link in l for l in section('The validation-split search'))
    assert all(run.name not in l for l in README.splitlines() if l.startswith('|'))

def test_there_are_committed_runs():
    assert RUNS, 'no run under results/'

@pytest.mark.parametrize('run', RUNS, ids=lambda p: p.name)
def test_run_folder_is_complete_and_consistent(run):
    for f in ('history.csv', 'curves.png', 'confusion_matrix.png', 'results.json', 'RUN.md'): assert (run/f).stat().st_size > 0, f
    for f in ('checkpoint.pth', 'model.pkl', 'model.safetensors'): assert not (run/f).exists(), f'{f}: weights are not committed'
    for png in ('curves.png', 'confusion_matrix.png'): assert min(Image.open(run/png).size) > 300
    res = json.loads((run/'results.json').read_text())
    with open(run/'history.csv') as f: rows = list(csv.DictReader(f))
    acc = [float(r['test_accuracy']) for r in rows]
    assert [int(r['epoch']) for r in rows] == list(range(1, res['epochs'] + 1))
    assert res['final_test_accuracy'] == pytest.approx(acc[-1], abs=1e-5)
    assert res['best_test_accuracy'] == pytest.approx(max(acc), abs=1e-5) and res['best_epoch'] == acc.index(max(acc)) + 1
    assert res['final_train_accuracy'] == pytest.approx(float(rows[-1]['train_accuracy']), abs=1e-5)
    assert res['train_seconds'] == pytest.approx(sum(float(r['seconds']) for r in rows), rel=1e-4)
    assert res['params'] == 193_280

@pytest.mark.parametrize('run', RUNS, ids=lambda p: p.name)
def test_results_readme_quotes_the_committed_figures(run):
    "results/README.md links every run's RUN.md and quotes its final, best and flip-TTA accuracy as recorded."
    res = json.loads((run/'results.json').read_text())
    want = [pct(res[k]) for k in ('final_test_accuracy', 'best_test_accuracy', 'final_test_accuracy_flip_tta')]
    lines = [l for l in REPORT.splitlines() if l.startswith('|') and f'({run.name}/RUN.md)' in l]
    assert lines, f'results/README.md links no row to {run.name}/RUN.md'
    assert any(all(w in l for w in want) for l in lines), want

@pytest.mark.parametrize('run', RUNS, ids=lambda p: p.name)
def test_results_readme_per_epoch_table_is_the_history(run):
    "A row of results/README.md's per-epoch table is the run's test accuracy at epochs 1, 5, 10, ..., 30 from history.csv."
    h = rows(run/'history.csv')
    want = ' | '.join(pct(float(h[e-1]['test_accuracy'])) for e in (1, 5, 10, 15, 20, 25, 30))
    assert any(l.startswith(f'| {run.name} ') and l.endswith(f'| {want} |') for l in section('Per epoch')), want

def test_results_readme_is_generated(report, seed_table_env):
    "results/README.md is what results/report.py writes from the run folders now: it cannot drift from them."
    assert REPORT == report.report(), 'results/README.md is stale: run `python results/report.py`'

def _settings_by_hand(res):
    "A run's recipe settings, older results.json completed with what those versions ran (dropout 0.05, one 16x16 hole)."
    aug = res.get('aug_spec', 'readme')
    cut = res.get('cutout', 16)
    # the settings alone, not the recorded recipe name: runs from before the recipes were renamed recorded other names
    return (res['wd'], res.get('wd_bn_bias', True), res['label_smoothing'], res.get('dropout', 0.05), res.get('nesterov', False), res.get('ema', 0.),
            16 if cut is None and aug == 'readme' else cut, aug, res['lr'], res.get('warmup', 0.3), res['bs'], res.get('model_version', 1))

def test_group_mean_and_sd_are_numpy_s():
    "Every group of two or more runs shows numpy's mean and sample SD (ddof 1) of its final, flip-TTA and train accuracy."
    groups = {}
    for run in RUNS:
        res = json.loads((run/'results.json').read_text())
        if run not in HOLDOUT_RUNS: groups.setdefault(_settings_by_hand(res), []).append(res)
    seed = groups[(1e-4, True, 0., 0.05, False, 0., 16, 'readme', 0.05, 0.3, 128, 1)]  # today's seed-readme on the Net's first layout
    assert len(seed) >= 2, "the seed's recipe has fewer than two runs"
    table = [l for l in section('Runs grouped by recipe') if l.startswith('| `')]
    for key, rs in groups.items():
        if len(rs) < 2: continue
        want = [f"{100*np.mean(x):.2f} ± {100*np.std(x, ddof=1):.2f}%" for x in
                ([r[k] for r in rs] for k in ('final_test_accuracy', 'final_test_accuracy_flip_tta', 'final_train_accuracy'))]
        assert any(all(w in l for w in want) and f'| {len(rs)} |' in l for l in table), (key, want)

def test_executor_section_compares_each_recipe_run_with_both_executors(report):
    "Per recipe with runs of both executors: each one's mean, their difference, and the recipe's SD, by hand."
    from types import SimpleNamespace as NS
    s = dict(report.IMPROVED, recipe='improved', model_version=2)
    def run(seed, acc, aug): return NS(seed=seed, s=s, res=dict(final_test_accuracy=acc, final_test_accuracy_flip_tta=acc, final_train_accuracy=acc, aug=aug))
    runs = [run(1, .830, 'albumentations'), run(2, .834, 'albumentations'), run(3, .842, 'batch'), run(4, .846, 'batch')]
    text = report.executor_section(report.group_runs(runs))
    sd = 100*np.std([.830, .834, .842, .846], ddof=1)
    row = next(l for l in text.splitlines() if l.startswith('| `improved`'))
    assert row == (f"| `improved` (layout 2) | 83.20 ± 0.28% (2 runs: seeds 1, 2) | 84.40 ± 0.28% (2 runs: seeds 3, 4) | +1.20 | {sd:.2f} | "
                   f"{'within' if 1.2 <= 2*sd else 'beyond'} |")
    assert report.executor_section(report.group_runs(runs[:2])) == ''  # one executor only: nothing to compare

def test_a_changed_schedule_is_its_own_experiment(report):
    "A run at another max LR or batch size is not grouped with its recipe's runs, and the report names the change and its flags."
    from types import SimpleNamespace as NS
    base = dict(report.IMPROVED, recipe='improved', model_version=2)
    def run(name, acc, **kw):
        return NS(name=name, seed=42, s=dict(base, **kw), kind='cpu', hist=dict(seconds=np.array([100., 120., 110.])), machine='CPU',
                  res=dict(final_test_accuracy=acc, final_test_accuracy_flip_tta=acc, final_train_accuracy=acc,
                           best_test_accuracy=acc, best_epoch=30, aug='batch'))
    runs = [run('a', .84), run('b', .85, bs=64, lr=0.025), run('c', .83, wd_bn_bias=False, warmup=0.2)]
    assert [g.n for g in report.group_runs(runs)] == [1, 1, 1]
    assert report.describe(runs[2].s) == '`improved`, no weight decay on BatchNorm and biases, warm-up 0.2 of the steps'
    assert report.command(runs[2].s) == '--recipe improved --no-wd-bn-bias --warmup 0.2'
    assert report.describe(runs[1].s) == '`improved`, max LR 0.025, batch 64'
    assert report.command(runs[1].s) == '--recipe improved --lr 0.025 --bs 64'
    text = report.search_section(runs)
    assert '| [b](b/RUN.md) | `improved`, max LR 0.025, batch 64 (`--recipe improved --lr 0.025 --bs 64 --valid holdout`) | **85.00%** |' in text
    assert 'max LR 0.025, batch 64: +1.00 points' in text
    old = report.settings(dict(wd=1e-4, label_smoothing=0.))  # a results.json without them: what it ran with
    assert (old['lr'], old['warmup'], old['bs'], old['wd_bn_bias']) == (0.05, 0.3, 128, True)

def test_search_names_a_combination_and_what_each_change_gave_alone(report):
    "A holdout run of several changes, each run alone: the search says how each measured alone and whether they are all the gains."
    from types import SimpleNamespace as NS
    base = dict(report.IMPROVED, recipe='improved', model_version=2)
    def run(name, acc, **kw):
        return NS(name=name, seed=42, s=dict(base, **kw), kind='cpu', hist=dict(seconds=np.array([100., 120.])), machine='CPU',
                  res=dict(final_test_accuracy=acc, final_test_accuracy_flip_tta=acc, final_train_accuracy=acc,
                           best_test_accuracy=acc, best_epoch=30, aug='batch', precision='fp32'))
    runs = [run('base', .840), run('nest', .844, nesterov=True), run('ema', .842, ema=0.999), run('tr', .838, aug_spec='translate'),
            run('both', .850, nesterov=True, ema=0.999)]
    text = report.search_section(runs)
    assert ('Combined: Nesterov momentum, weight EMA 0.999: every change that measured above `--recipe improved` alone, '
            'together (alone: Nesterov momentum +0.40; weight EMA 0.999 +0.20).' in text)
    assert 'Nesterov momentum, weight EMA 0.999: +1.00 points (within that noise)' in text
    assert '| CPU | fp32 | batch |' in text
    # one gain left out: the same run is only 'these changes together'
    runs.append(run('ls', .845, label_smoothing=0.2))
    text = report.search_section(runs)
    assert 'Nesterov momentum, weight EMA 0.999: these changes together (alone: Nesterov momentum +0.40; weight EMA 0.999 +0.20).' in text
    assert 'PHASE=7' not in text  # bench/gpu.sh's candidate is another combination
    combo = dict(nesterov=True, ema=0.999, flip='alternate', wd_bn_bias=False, lr=0.1)  # bench/gpu.sh's COMBO
    alone = [run(k, .841, **{k: v}) for k, v in combo.items()]
    assert 'bench/gpu.sh` PHASE=7 trains it beside' in report.search_section([runs[0], *alone, run('all', .846, **combo)])
    assert 'PHASE=7' not in report.search_section([runs[0], *alone, run('all', .86, **combo)])  # beyond the noise: chosen
    # a change of two settings never run alone (a batch size with its LR) is no combination
    assert 'Combined' not in report.search_section(runs[:1] + [run('b', .85, bs=64, lr=0.025)])

def test_ablation_moves_one_setting_from_each_recipe(report):
    "The ablation: groups one setting away from `seed` or `improved` (current layout), their difference by hand, what is missing."
    from types import SimpleNamespace as NS
    def run(seed, acc, base, version=2, precision='bf16', **kw):
        s = dict(report.RECIPES[base], recipe=base, model_version=version, **kw)
        return NS(seed=seed, s=s, res=dict(final_test_accuracy=acc, final_test_accuracy_flip_tta=acc + .01, final_train_accuracy=acc + .02,
                                           precision=precision))
    runs = [run(1, .830, 'seed'), run(2, .832, 'seed'), run(1, .838, 'seed', dropout=0.), run(2, .842, 'seed', precision='fp32', dropout=0.),
            run(1, .840, 'improved'), run(1, .835, 'improved', cutout=16),
            run(1, .900, 'seed', version=1, dropout=0.),       # another layout: not in the ablation
            run(1, .800, 'seed', dropout=0., nesterov=True)]   # two changes: not a row
    text = report.ablation_section(report.group_runs(runs), version=2)
    table = [l for l in text.splitlines() if l.startswith('| from') or l.startswith('| back')]
    assert table[0] == '| from `seed` | none: `--recipe seed` | `--recipe seed` | 2 (1, 2) | **83.10 ± 0.14%** |  | 84.10 ± 0.14% | 85.10 ± 0.14% | bf16 (x2) |'
    drop = f"{100*np.mean([.838, .842]):.2f} ± {100*np.std([.838, .842], ddof=1):.2f}%"
    assert table[1] == f'| from `seed` | dropout 0 | `--dropout 0` | 2 (1, 2) | **{drop}** | +0.90 | 85.00 ± 0.28% | 86.00 ± 0.28% | bf16, fp32 |'
    assert table[2].startswith('| back from `improved` | none: `--recipe improved` |')
    assert table[3] == '| back from `improved` | cutout 16x16 | `--recipe improved --cutout 16` | 1 (1) | **83.50%** | -0.50 | 84.50% | 85.50% | bf16 |'
    assert len(table) == 4
    not_run = next(l for l in text.splitlines() if l.startswith('Not run yet:'))
    assert 'from `seed`: wd 5e-4 (`--wd 5e-4`)' in not_run and 'from `seed`: dropout 0 (' not in not_run
    assert 'back from `improved`: dropout 0.05 (`--recipe improved --dropout 0.05`)' in text
    assert 'Rows with fewer than two runs: back from `improved`: cutout 16x16 (1 run).' in text
    # a row with a run in another arithmetic than its recipe's runs is named, the others not
    assert "the change's): from `seed`: dropout 0 (bf16, fp32 against bf16 (x2))." in text

def test_seed_table_distance_by_hand():
    "One run's distance from the seed's per-epoch table, recomputed here: mean |difference| in points, and the end gap."
    run = next((r for r in RUNS if r.name.startswith('gpu-')), RUNS[0])
    seed, h = rows(SEED_COPY), rows(run/'history.csv')
    assert len(h) == len(seed) == 30
    mad = lambda k: sum(abs(100*float(a[k]) - float(b[k])) for a, b in zip(h, seed)) / len(seed)
    gap = 100*(float(h[-1]['train_accuracy']) - float(h[-1]['test_accuracy']))
    line = next(l for l in section("Against the seed's own per-epoch table") if l.startswith(f'| [{run.name}]('))
    assert line.split(' | ')[2:5] == [f"{mad('test_accuracy'):.2f}", f"{mad('train_accuracy'):.2f}", f'{gap:+.2f} |'], line
    seed_gap = float(seed[-1]['train_accuracy']) - float(seed[-1]['test_accuracy'])
    assert f'{seed_gap:+.2f} (' in REPORT

def test_seed_table_is_the_published_copy():
    "results/seed_epochs.csv: the seed's 30 published epochs, as ../shared/seed/epochs.csv has them where that exists."
    assert [int(r['epoch']) for r in rows(SEED_COPY)] == list(range(1, 31))
    shared = ROOT.parent/'shared'/'seed'/'epochs.csv'
    if not shared.exists(): pytest.skip(f'{shared} is absent: the copy is the reference')
    assert SEED_COPY.read_text() == shared.read_text()

def test_report_without_the_seed_table(report):
    "Without the seed's table the report skips its comparison with one line, and quotes none of its figures."
    text = report.report(seed=None)
    assert "The seed's per-epoch table was not found" in text and 'the seed, as published' not in text
    assert report.seed_table('/nonexistent/epochs.csv') is None

def test_top_readme_quotes_the_headline(report, seed_table_env):
    "The top-level README's results table is report.headline(), verbatim."
    lines = README.splitlines()
    for l in report.headline().splitlines(): assert l in lines, l

def test_readme_generated_blocks_are_current(report, seed_table_env):
    "The README's headline, flags table (fastcifar.recipe) and architecture table (fastcifar.model) are generated."
    text = (ROOT/'README.md').read_text()
    assert text == report.sync_readme(text), 'run python results/report.py'

def test_the_default_recipe_is_the_closer_reconstruction():
    "Of the seed's two reconstructions, `--recipe seed` (the default) has the mean curves nearer the seed's table, by hand."
    from fastcifar.recipe import RECIPES
    seed = rows(SEED_COPY)
    def curves(aug):
        "Mean test and train curves (points) of the runs with the seed's settings and augmentation `aug`."
        def same(res):
            return (res.get('aug_spec', 'readme'), res['wd'], res['label_smoothing'], res.get('dropout', .05)) == (aug, 1e-4, 0., .05) \
                and res.get('cutout') in (None, 16)
        hs = [rows(r/'history.csv') for r in RUNS if r not in HOLDOUT_RUNS and same(json.loads((r/'results.json').read_text()))]
        return [np.mean([[100*float(x[k]) for x in h] for h in hs], axis=0) for k in ('test_accuracy', 'train_accuracy')], len(hs)
    mad = lambda c, k: np.mean(np.abs(c - np.array([float(x[k]) for x in seed])))
    (te_a, tr_a), n_a = curves(RECIPES['seed']['aug_spec'])
    (te_b, tr_b), n_b = curves(RECIPES['seed-readme']['aug_spec'])
    assert n_a >= 1 and n_b >= 1
    assert mad(te_a, 'test_accuracy') < mad(te_b, 'test_accuracy') and mad(tr_a, 'train_accuracy') < mad(tr_b, 'train_accuracy')
    assert f"{mad(te_a, 'test_accuracy'):.2f} points of test accuracy and {mad(tr_a, 'train_accuracy'):.2f} of train" in ' '.join(README.split())

def test_machine_says_one_thread_in_the_singular(report):
    "Runs before 2026-12-01 recorded 'CPU: ..., 1 threads': the report writes one thread as new runs do; two stay plural."
    assert report.machine('cpu-x', {'device': 'CPU: AMD EPYC, 1 threads'}, '') == 'CPU: AMD EPYC, 1 thread'
    assert report.machine('cpu-x', {'device': 'CPU: AMD EPYC, 2 threads'}, '') == 'CPU: AMD EPYC, 2 threads'
    assert report.machine('cpu-x', {'device': 'CPU: AMD EPYC, 11 threads'}, '') == 'CPU: AMD EPYC, 11 threads'
    run_md = 'epochs 1-17 on a lent NVIDIA H200'
    assert report.machine('hybrid-x', {'device': 'CPU: AMD EPYC, 1 threads'}, run_md, short=True) == 'NVIDIA H200, then CPU: AMD EPYC, 1 thread'
    assert '1 threads' not in REPORT

def test_ablation_points_to_the_gpu_script_while_a_row_is_short(report):
    "Every row run but one at a single seed: nothing is missing, the short row is named, and the GPU script's phases are given."
    from types import SimpleNamespace as NS
    def run(seed, s): return NS(seed=seed, s=dict(s, model_version=2), res=dict(final_test_accuracy=.83, final_test_accuracy_flip_tta=.84,
                                                                              final_train_accuracy=.85, precision='bf16'))
    levers = [k for k in report._RECIPES['seed'] if report._RECIPES['seed'][k] != report._RECIPES['improved'][k]]
    runs = []
    for name, other in (('seed', 'improved'), ('improved', 'seed')):
        runs += [run(s, dict(report.RECIPES[name], recipe=name)) for s in (1, 2)]
        for k in levers:
            one = dict(report._one_change(name, k, report._RECIPES[other][k]), recipe=name)
            runs += [run(s, one) for s in ((1,) if (name, k) == ('improved', 'wd') else (1, 2))]
    text = report.ablation_section(report.group_runs(runs), version=2)
    # `--recipe seed --aug-spec readme --cutout 16` (the command the table asks for) records cutout 16: still its row
    assert any(l.startswith('| from `seed` | ') and '`--aug-spec readme --cutout 16`' in l for l in text.splitlines())
    assert 'Not run yet: none. Rows with fewer than two runs: back from `improved`: wd 1e-4 (1 run).' in text
    assert 'PHASE=6: seed 2' in text
    assert len([l for l in text.splitlines() if l.startswith(('| from', '| back'))]) == 2 + 2*len(levers)
