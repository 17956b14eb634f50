"""Where a training run's start goes before its first step, each round in a fresh process: the imports, the data
(decoded arrays, from the cache after the first round), the DataLoaders, the Learner with its optimizer, the first
training batch. `python -m bench.startup --data PATH`.

A slow phase here is paid by every run, resume and seed: the DataLoaders' phase once took 35 s of each start on a
2-core CPU (fastai's DataBlock printed every item into a message nobody saw; `data.Items`). `--cold` gives each process
an empty cache: its data phase is a first run's, reading and decoding the source (`--archive extract`: an archive
extracted to disk and decoded in one process, as fastcifar did before it read archives in memory).
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, time
from fastcore.script import call_parse
from fastcifar.machine import cpu_name

PHASES = ('import', 'data', 'dataloaders', 'learner', 'first_batch')

# one fresh process: the seconds of each phase, in the order `train()` meets them
_ONE = '''
import json, sys, time
t = [time.perf_counter()]
import fastcifar.train as T
from fastcifar.sources import load_cifar
t.append(time.perf_counter())
if sys.argv[3] == 'list':  # the items as a plain list, as before `data.Items`: what fastai's unseen message costs
    import fastcifar.data as D
    items = D.cifar_items
    D.cifar_items = lambda *a, **k: (lambda i, v: (list(i), v))(*items(*a, **k))
if sys.argv[4] == 'extract':  # the archive extracted to the cache, then decoded in this process alone, as before
    import fastcifar.sources as S
    S._PARALLEL = float('inf')
    S._decode_archive = lambda arch: S._decode_copy(*S.find_cifar(S.extract(arch), desc=arch))
data = load_cifar(sys.argv[1] or None)
t.append(time.perf_counter())
dls = T.cifar_dls(data=data, bs=128, executor=sys.argv[2], seed=42)
t.append(time.perf_counter())
learn = T.seed_learner(dls)
learn.create_opt()  # torch's optimizer imports torch._dynamo on its first parameter group
t.append(time.perf_counter())
xb, yb = dls.train.one_batch()
t.append(time.perf_counter())
print(json.dumps(dict(zip(%r, (b - a for a, b in zip(t, t[1:]))))))
''' % (PHASES,)

def one(data, executor, items='Items', cold=False, archive='memory'):
    "The phases' seconds of one fresh process (`cold`: with an empty cache of its own, removed after)."
    env = dict(os.environ)
    if cold: env['FASTCIFAR_CACHE'] = cache = tempfile.mkdtemp(prefix='fastcifar-cold-')
    try: r = subprocess.run([sys.executable, '-c', _ONE, data or '', executor, items, archive], capture_output=True, text=True, env=env)
    finally:
        if cold: shutil.rmtree(cache, ignore_errors=True)
    if r.returncode: sys.exit(f'bench.startup: error: the measuring process failed: {(r.stderr.strip().splitlines() or ["?"])[-1]}')
    return json.loads(r.stdout.strip().splitlines()[-1])

@call_parse
def main(data:str=None,        # CIFAR-10 source (archive, folder, pickles), as training's `--data` (none: fastai's download)
         rounds:int=3,         # fresh processes; the first may decode the data into the cache
         executor:str='batch', # the augmentation executor: batch or albumentations
         items:str='Items',    # the DataBlock's source: Items (fastcifar's) or list (a plain list, as before)
         cold:bool=False,      # each process with an empty cache: the data phase reads and decodes the source
         archive:str='memory', # with --cold, an archive: memory (read in one pass, decoded on every core) or extract (as before)
         out:str=None):        # JSON file to write the figures to
    "Seconds of each phase of a training run's start, median over fresh processes after the first."
    if items not in ('Items', 'list'): sys.exit(f'bench.startup: error: --items {items}: unknown; choose Items or list')
    if archive not in ('memory', 'extract'): sys.exit(f'bench.startup: error: --archive {archive}: unknown; choose memory or extract')
    runs = [one(data, executor, items, cold, archive) for _ in range(rounds)]
    later = runs[1:] or runs
    res = dict(date=time.strftime('%Y-%m-%d %H:%M'), cpu=cpu_name(), data=data, executor=executor, items=items, cold=cold,
               archive=archive, rounds=runs, median_s={p: statistics.median(r[p] for r in later) for p in PHASES})
    res['median_s']['total'] = sum(res['median_s'][p] for p in PHASES)
    cache = f"an empty cache each (an archive: {'read in memory' if archive == 'memory' else 'extracted, as before'})" if cold else 'the cache'
    print(f"{res['date']}  {res['cpu']}; {executor} executor, the items as {items}, data from {cache}; median of {len(later)} fresh processes (of {rounds})")
    for p in PHASES + ('total',): print(f"{p:12} {res['median_s'][p]:7.2f} s")
    if out: open(out, 'w').write(json.dumps(res, indent=2) + '\n')
