"""What keeping freed memory (`fastcifar.memory.reuse_freed_memory`) does to the CPU training step: the step with and
without it, each in a fresh process (glibc's settings are per process and cannot be undone), rounds alternated so
that a shared machine's noise hits both alike. `python -m bench.memory`."""
import json, resource, statistics, subprocess, sys, time, torch
from fastcore.script import call_parse
from bench.compute import cpu_name
from fastcifar.train import pick_precision

# one process: the step's median time and minor page faults a step, with glibc's defaults ('off') or fastcifar's ('on')
_ONE = '''
import json, resource, sys, statistics, bench.compute as c
from fastcifar.model import Net
if sys.argv[1] == 'off': c.reuse_freed_memory = lambda: False  # glibc's defaults, as before fastcifar set them
out = {}
for name, p in (('faithful', 0.05), ('no dropout', 0.)):
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ts = c.step_times('cpu', sys.argv[3], True, steps=int(sys.argv[2]), warmup=3, model=Net(p))
    out[name] = dict(ms=1e3*statistics.median(ts), faults=(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)//(len(ts) + 3))
print(json.dumps(out))
'''

def one(mode, steps, precision):
    "The step's figures in a fresh process in `precision`, glibc's defaults ('off') or freed memory kept ('on')."
    r = subprocess.run([sys.executable, '-c', _ONE, mode, str(steps), precision], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])

@call_parse
def main(rounds:int=3,   # rounds, each running both settings in turn
         steps:int=15,   # timed steps per network and process
         out:str=None,   # JSON file to write the figures to
         precision:str='auto'):  # the step's precision: auto (what training picks here), fp32 or bf16
    "Median channels-last training step (batch 128) with and without freed memory kept, on the CPU."
    # `auto` as training resolves it: an AVX2-only CPU trains in fp32, and its emulated bf16 step is another workload
    precision = pick_precision(precision, 'cpu')
    runs = {'off': [], 'on': []}
    for _ in range(rounds):
        for mode in runs: runs[mode].append(one(mode, steps, precision))
    res = dict(date=time.strftime('%Y-%m-%d %H:%M'), cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__,
               precision=precision,
               rounds=runs, median_ms={m: {k: statistics.median(r[k]['ms'] for r in rs) for k in rs[0]} for m, rs in runs.items()},
               faults_a_step={m: {k: statistics.median(r[k]['faults'] for r in rs) for k in rs[0]} for m, rs in runs.items()})
    print(f"{res['date']}  {res['cpu']}, {res['threads']} threads, torch {res['torch']}, {precision}; median of {rounds} processes each")
    for k in res['median_ms']['off']:
        off, on = res['median_ms']['off'][k], res['median_ms']['on'][k]
        print(f"step, {k:10}: glibc defaults {off:6.1f} ms ({res['faults_a_step']['off'][k]:,.0f} page faults a step), "
              f"freed memory kept {on:6.1f} ms ({res['faults_a_step']['on'][k]:,.0f}): {off/on:.2f}x")
    if out: open(out, 'w').write(json.dumps(res, indent=2) + '\n')
