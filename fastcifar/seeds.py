"""One recipe over several random seeds, each into its own run folder, and their summary: `python -m fastcifar.seeds`.

`python -m fastcifar.seeds --seeds 1 2 3 --out runs/improved --recipe improved` trains `runs/improved/seed1`, ...
(sequentially; `--parallel N` runs N at once, on a GPU or sharing the CPU's cores), resumes a folder that holds an unfinished run, skips a
finished one, and writes `summary.json` and `summary.md` beside them: mean, sample SD, min and max of each figure.
"""
import json, os, statistics, subprocess, sys, time
from pathlib import Path
from .files import atomic_write
from .recipe import SETTINGS, parser

__all__ = ['FIGURES', 'summarise', 'run_seeds', 'main']

FIGURES = ('final_test_accuracy', 'final_test_accuracy_flip_tta', 'final_train_accuracy', 'seconds_per_epoch')
MULTI = 'final_test_accuracy_multi_tta'  # six-view TTA: in the summary where every run measured it (newer runs)

def _stats(xs):
    return dict(n=len(xs), mean=statistics.fmean(xs), sd=statistics.stdev(xs) if len(xs) > 1 else None, min=min(xs), max=max(xs))

def summarise(folders):
    "Mean, sample SD, min and max of each of `FIGURES` over the finished runs in `folders`; timings per machine."
    runs = [dict(folder=str(f), **json.loads((Path(f)/'results.json').read_text())) for f in folders if (Path(f)/'results.json').is_file()]
    if not runs: return dict(runs=[], n=0)
    out = dict(n=len(runs), recipe=sorted({r['recipe'] for r in runs}), seeds=[r.get('random_seed', r.get('seed')) for r in runs],
               machines=sorted({r['device'] for r in runs}), resumed=[r['folder'] for r in runs if r.get('resumed')])
    for k in FIGURES[:3]: out[k] = _stats([r[k] for r in runs])
    if all(MULTI in r for r in runs): out[MULTI] = _stats([r[MULTI] for r in runs])
    # seconds an epoch compare only within one machine, and not for runs that were resumed (perhaps elsewhere)
    out['seconds_per_epoch'] = {m: _stats([r['seconds_per_epoch'] for r in runs if r['device'] == m and not r.get('resumed')])
                                for m in out['machines'] if any(r['device'] == m and not r.get('resumed') for r in runs)}
    out['runs'] = [{k: r.get(k) for k in ('folder', 'random_seed', 'device', 'resumed', *FIGURES, MULTI)} for r in runs]
    return out

def _pct(s): return f"{100*s['mean']:.2f}" + (f" ± {100*s['sd']:.2f}%" if s['sd'] is not None else '%') + f" (min {100*s['min']:.2f}, max {100*s['max']:.2f})"

def _markdown(sm):
    lines = [f"# {', '.join(sm['recipe'])}: {sm['n']} runs (random seeds {', '.join(map(str, sm['seeds']))})", '',
             '| figure | mean ± sample SD (min, max) |', '|---|---|']
    lines += [f'| {k.replace("_", " ")} | {_pct(sm[k])} |' for k in (*FIGURES[:3], MULTI) if k in sm]
    lines += [f'| seconds an epoch, {m} | {s["mean"]:.1f} ± {s["sd"] or 0:.1f} ({s["n"]} runs not resumed) |' for m, s in sm['seconds_per_epoch'].items()]
    if sm['resumed']: lines += ['', f"Resumed (their timings left out): {', '.join(sm['resumed'])}."]
    return '\n'.join(lines) + '\n'

def _argv(settings, seed, folder):
    "The training command line of one seed's run: `settings` as flags."
    flag = lambda k: k.replace('_', '-')
    # a switch off by default (--compile) has no --no- form; a recipe's switch (default None) has both
    off = {s.name for s in SETTINGS if s.default is False}
    args = [f'--{flag(k)}' if v is True else f'--no-{flag(k)}' if v is False else f'--{flag(k)}={v}' for k, v in settings.items()
            if v is not None and not (v is False and k in off) and k not in ('out', 'random_seed', 'resume', 'overwrite')]
    resume = (folder/'checkpoint.pth').is_file()
    return args + [f'--random-seed={seed}', f'--out={folder}'] + (['--resume'] if resume else [])

def _env(parallel, cuda=None):
    "The environment of each run: on the CPU, `parallel` runs share the cores (OMP_NUM_THREADS), unless the user set it."
    # torch starts one thread a core in every process: N runs at once would each start as many, N times too many
    env = dict(os.environ)
    if cuda is None:
        import torch; cuda = torch.cuda.is_available()
    if parallel > 1 and not cuda and 'OMP_NUM_THREADS' not in env: env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1)//parallel))
    return env

def _wait_one(running, failed):
    "Wait until one of the `running` (folder, process) pairs ends; note its folder in `failed` if it failed."
    while True:
        for i, (f, p) in enumerate(running):
            if p.poll() is not None:
                if p.returncode: failed.append(str(f))
                del running[i]; return
        time.sleep(0.2)

def run_seeds(seeds, out, parallel=1, **settings):
    "Train `settings` once per seed into `out/seed<N>` (`parallel` at a time, each its own process); the summary."
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    folders = [out/f'seed{s}' for s in seeds]
    todo = [(s, f) for s, f in zip(seeds, folders) if not (f/'results.json').is_file()]
    running, failed, env = [], [], _env(parallel)
    for s, f in todo:  # each its own process: a failure or Ctrl-C stops that run only, and runs can go side by side
        while len(running) >= parallel: _wait_one(running, failed)
        running.append((f, subprocess.Popen([sys.executable, '-m', 'fastcifar.train', *_argv(settings, s, f)], env=env)))
    while running: _wait_one(running, failed)
    sm = summarise(folders)
    sm['failed'] = failed
    atomic_write(out/'summary.json', lambda p: p.write_text(json.dumps(sm, indent=2) + '\n'))
    if sm['n']: atomic_write(out/'summary.md', lambda p: p.write_text(_markdown(sm)))
    return sm

def main(argv=None):
    "`python -m fastcifar.seeds`: the training flags, plus --seeds and --parallel."
    p = parser(prog='python -m fastcifar.seeds', description=__doc__.splitlines()[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3], help='random seeds, one run each (default: 1 2 3)')
    p.add_argument('--parallel', type=int, default=1, help='runs at a time (default: 1; a GPU takes several; on the CPU they share the cores)')
    a = vars(p.parse_args(argv))
    seeds, parallel, out = a.pop('seeds'), a.pop('parallel'), a.pop('out') or 'runs/seeds'
    if parallel < 1: sys.exit('fastcifar.seeds: error: --parallel must be 1 or more')
    sm = run_seeds(seeds, out, parallel, **a)
    if sm['n']: print(_markdown(sm), end='')
    if sm['failed']: sys.exit(f"fastcifar.seeds: error: {len(sm['failed'])} of {len(seeds)} runs failed: {', '.join(sm['failed'])}")

if __name__ == '__main__': main()
