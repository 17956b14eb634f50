"""Inference throughput and start-up: `python -m bench.inference --data PATH --model RUN/model.pkl`.

Batch throughput (images/s) over the 10,000 test images through the full path, for both model formats:
image files of the extracted test folder (or the decoded arrays) -> 32x32 RGB -> scale/normalise -> model -> top-1;
against the raw forward of the same weights on the same preprocessed tensors, in the same run. And the CLI's
start-up for one image (subprocess wall time), for the .pkl and the weights-only format. Repeats are interleaved
(every measurement once per round), so a change in the machine's load hits all of them alike.
"""
import json, os, shutil, subprocess, sys, tempfile, time, numpy as np, torch
from pathlib import Path
from fastcore.script import call_parse
from fastcifar.sources import DataError, load_cifar, extract, find_cifar
from fastcifar.predict import image_files, load_model
from fastcifar.export import export_safe
from bench import compute

def summarise(xs): return dict(compute.summarise(xs), all=[round(x, 4) for x in xs])

def test_folder(data):
    "The extracted test/ folder of `data` (a folder in fastai's layout or a .tgz of it), or None for the pickles"
    p = Path(data).expanduser().resolve()
    kind, d = find_cifar(extract(p) if p.is_file() else p)
    return d/'test' if kind == 'folder' else None

def _timed(f):
    t = time.perf_counter(); r = f(); return time.perf_counter() - t, r

def raw_forward(model, x, bs):
    "The model alone on preprocessed tensors `x`, in batches of `bs` (what the predictor's model call does)"
    with torch.inference_mode():
        for i in range(0, len(x), bs): model(x[i:i+bs]).softmax(-1)

def startup(model, image, cwd):
    "Wall seconds of `python -m fastcifar.predict MODEL IMAGE` in a new process"
    t = time.perf_counter()
    r = subprocess.run([sys.executable, '-m', 'fastcifar.predict', str(model), str(image)], capture_output=True, text=True, cwd=cwd)
    dt = time.perf_counter() - t
    if r.returncode: raise SystemExit(f'bench.inference: the CLI failed on {model}: {r.stderr.strip()[-500:]}')
    return dt

def accuracy(preds, labels): return float(np.mean([p.label == y for p, y in zip(preds, labels)]))

@call_parse
def main(data:str=None,       # CIFAR-10: a folder in fastai's layout or a .tgz of it (the test folder's files are read)
         model:str=None,      # a run's model.pkl
         safe:str=None,       # its weights-only model.json (default: beside model.pkl, else exported to a temp folder)
         repeats:int=3,       # timed rounds
         bs:int=256,          # batch size
         n:int=None,          # only the first N test images (default: all)
         block:int=1000,      # images per timed block (measurements alternate block by block)
         out:str=None):       # JSON file to write the figures to
    "Time batch inference (full path vs raw forward) and CLI start-up for both model formats; print and save the figures."
    if not data or not model: raise SystemExit('bench.inference: error: give --data PATH and --model RUN/model.pkl')
    model, load0 = Path(model).resolve(), os.getloadavg()
    try:
        # the arrays first: decoding an archive removes an extraction of it, which `test_folder` then makes again
        cif, folder = load_cifar(data), test_folder(data)
    except DataError as e: raise SystemExit(f'bench.inference: error: {e}')
    if folder is None: raise SystemExit('bench.inference: error: --data must be image files (a folder or .tgz), not the pickles')
    files = list(image_files(folder))[:n]
    labels = [Path(f).parent.name for f in files]
    arrays = cif.x_test[:n]
    tmp = Path(tempfile.mkdtemp(prefix='bench-inference-'))
    pkl = load_model(model, bs=bs)
    safe = Path(safe) if safe else model.with_name('model.json')
    if not safe.exists(): safe = export_safe(pkl.learn, tmp)[1]
    sp = load_model(safe, bs=bs)
    net = sp.model
    x = sp.preprocess(arrays)  # the tensors the model sees, made once for the raw forward
    warm = min(512, len(files))
    for p in (sp, pkl): p.predict(files[:warm]); p.predict(arrays[:warm])
    raw_forward(net, x[:warm], bs)

    # The machine's load changes within seconds (other jobs): time every measurement on one block of images after
    # another, in an order that rotates from block to block, so each sees the same conditions; sum over the blocks.
    ylab = [cif.classes[y] for y in cif.y_test[:n]]
    work = {'raw_forward': lambda sl: raw_forward(net, x[sl], bs),
            'safe_files': lambda sl: sp.predict(files[sl]), 'safe_arrays': lambda sl: sp.predict(arrays[sl]),
            'pkl_files': lambda sl: pkl.predict(files[sl]), 'pkl_arrays': lambda sl: pkl.predict(arrays[sl])}
    runs, preds = {k: [] for k in work}, {k: [] for k in work}
    names = list(work)
    for r in range(repeats):
        for k in work: runs[k].append(0.); preds[k] = []
        for b, start in enumerate(range(0, len(files), block)):
            sl, rot = slice(start, start + block), (b + r) % len(names)
            for k in names[rot:] + names[:rot]:
                dt, res = _timed(lambda: work[k](sl))
                runs[k][-1] += dt
                preds[k] += res or []
        print(f'round {r+1}/{repeats}: ' + ', '.join(f'{k} {len(files)/v[-1]:.0f}/s' for k, v in runs.items()), flush=True)
    acc = {k: accuracy(v, ylab if k.endswith('arrays') else labels) for k, v in preds.items() if k != 'raw_forward'}
    ips = {k: summarise([len(files)/t for t in v]) for k, v in runs.items()}
    ratio = {k: summarise([t/raw for t, raw in zip(v, runs['raw_forward'])]) for k, v in runs.items() if k != 'raw_forward'}

    one = files[0]
    st = {'pkl': [], 'safe_json': [], 'python_import_torch': []}
    for r in range(repeats):
        st['pkl'].append(startup(model, one, tmp))
        st['safe_json'].append(startup(safe, one, tmp))
        t = time.perf_counter(); subprocess.run([sys.executable, '-c', 'import torch'], check=True, cwd=tmp)
        st['python_import_torch'].append(time.perf_counter() - t)

    shutil.rmtree(tmp, ignore_errors=True)
    res = dict(images=len(files), bs=bs, repeats=repeats, block=block,
               images_per_s=ips, seconds_over_raw_forward=ratio, test_accuracy=acc,
               cli_startup_one_image_s={k: summarise(v) for k, v in st.items()},
               notes='full path = file decode/resize + preprocessing + model + top-1 (files) or preprocessing + model + '
                     'top-1 (decoded arrays); raw_forward = model on the same preprocessed tensors; timed block by block in rotating '
                     'order, summed per round; ratios are per round',
               meta=dict(date=time.strftime('%Y-%m-%d %H:%M'), torch=torch.__version__, threads=torch.get_num_threads(),
                         cpu=compute.cpu_name(), cpus=os.cpu_count(),
                         loadavg_start_end=(load0, os.getloadavg()), model=str(model), safe=str(safe), data=str(data)))
    s = json.dumps(res, indent=2)
    print(s)
    print(f'\n{len(files)} test images, bs {bs}, {torch.get_num_threads()} thread(s), {repeats} rounds: median [min-max]')
    for k, v in ips.items():
        r = ratio.get(k)
        print(f'  {k:12s} {v["median"]:7.0f} img/s [{v["min"]:.0f}-{v["max"]:.0f}]' +
              (f'   {r["median"]:.2f}x raw forward time [{r["min"]:.2f}-{r["max"]:.2f}]   top-1 {acc[k]:.4f}' if r else ''))
    for k, v in res['cli_startup_one_image_s'].items(): print(f'  start-up {k:20s} {v["median"]:.2f} s [{v["min"]:.2f}-{v["max"]:.2f}]')
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(s + '\n')
