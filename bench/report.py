"""bench/README.md's speed table, generated from the recorded `python -m bench.speed` outputs: `python -m bench.report`.

Each `bench/results/speed_*.json` is one run of `bench.speed` on one machine; every figure in a row was measured in
that run, so ratios within a row compare, rows of different machines do not.
"""
import json
from pathlib import Path

__all__ = ['BENCH', 'speed_runs', 'speed_table', 'sync_readme', 'main']

BENCH = Path(__file__).resolve().parent
MARK = 'speed'

def speed_runs(folder=BENCH/'results'):
    "The recorded bench.speed outputs, oldest first: (file name, figures)."
    runs = [(p.name, json.loads(p.read_text())) for p in sorted(Path(folder).glob('speed_*.json'))]
    return sorted(runs, key=lambda r: r[1]['date'])

def _row(name, r):
    ep = r.get('epoch', {})
    def epoch(e):
        if e not in ep: return 'not timed'
        x = ep[e]
        first = f" (first epoch, compiling: {x['first_epoch_s']:.1f} s)" if 'first_epoch_s' in x else ''
        return f"{x['train_s']:.1f} s: data wait {x['data_wait_s']:.1f} s ({x['data_wait_s']/x['train_s']:.1%}), in batches {x['in_batch_s']:.1f} s{first}"
    def data(e):  # since b59ae4a the second pass, the first (which stacks the splits StackedDL reads) given apart
        first = r.get('data_first_pass_s', {})
        return f"{r['data_images_per_s'][e]:,.0f}" + (f" (first pass {first[e]:.1f} s)" if e in first else '')
    s, f = r['step_ms'], r['step_fraction_of_peak']
    comp = f"{s['faithful, compiled']:.1f} ({f['faithful, compiled']:.0%})" if 'faithful, compiled' in s else 'not timed'
    c = r.get('commit')
    code = f"{c[:7] + '+dirty' * c.endswith('+dirty') if c else 'not recorded'}, torch {r.get('torch', '?')}"
    return [f"[{name}](results/{name})", f"{r['cpu']}, {r['threads']} threads; {r['date']}", code, f"{r['matmul_peak_gflops']:.0f}",
            f"{s['faithful']:.1f} ({f['faithful']:.0%})", f"{s['no dropout']:.1f} ({f['no dropout']:.0%})", comp,
            f"**{r['faithful_over_no_dropout']:.2f}x**", data('albumentations'), data('batch'), f"{r['loop_overhead_us']:.0f}", epoch('albumentations'), epoch('batch'),
            epoch('batch, compiled')]

def speed_table(runs=None):
    "The Markdown table of every recorded bench.speed run."
    runs = speed_runs() if runs is None else runs
    if not runs: return '*No `python -m bench.speed` output is recorded in bench/results/ yet.*'
    head = ['output', 'machine; date', 'code (commit, torch)', 'bf16 matmul peak, GFLOP/s', 'faithful step, ms (of peak)', 'step without dropout, ms (of peak)',
            'faithful step compiled, ms (of peak)',
            'faithful / without', 'data alone, albumentations, images/s', 'data alone, batch, images/s', 'loop overhead, us a batch',
            'real epoch, albumentations', 'real epoch, batch', 'real epoch, batch, compiled (`--compile`)']
    return '\n'.join(['| ' + ' | '.join(head) + ' |', '|' + '---|'*len(head)] + ['| ' + ' | '.join(_row(n, r)) + ' |' for n, r in runs])

def sync_readme(text, runs=None):
    "`text` with its `<!-- speed -->` ... `<!-- /speed -->` block replaced by the generated table."
    a, b = f'<!-- {MARK} -->', f'<!-- /{MARK} -->'
    i, j = text.index(a) + len(a), text.index(b)
    return text[:i] + '\n' + speed_table(runs) + '\n' + text[j:]

def main():
    p = BENCH/'README.md'
    tmp = p.with_name('.README.md.tmp')
    tmp.write_text(sync_readme(p.read_text())); tmp.replace(p)
    print(f'wrote {p}')

if __name__ == '__main__': main()
