"""Every placement of BatchNorm / ReLU / Dropout on the seed's convolutions that gives both of its printed figures.

The seed printed `torchsummary.summary(Net(), (3, 32, 32))`: 193,280 parameters and a forward/backward pass size of
6.49 MB (total 7.24 MB). torchsummary counts the output of every non-container module (x2 for backward, 4 bytes a
value), so the layout's modules, not only its parameters, set the figure. `python -m bench.layouts` enumerates every
choice of {BN, ReLU, Dropout} after each of the 11 convolutions (the channels, kernels and sizes of fastcifar's
layer table) and lists those that fit, nearest to fastcifar's layout first.
"""
import itertools, time
from collections import Counter
from fastcore.script import call_parse
from fastcifar.model import layer_table

OPTS = list(itertools.product((0, 1), (0, 1), (0, 1)))  # (BN, ReLU, Dropout) after a conv
MB = lambda values: values*4/2**20

def seed_figures(act, params):
    "torchsummary's (forward/backward MB, total MB), rounded as it prints them, for `act` output values."
    fb = 2*MB(act)
    return round(fb, 2), round(MB(3*32*32) + fb + MB(params), 2)

def fits(convs, extra):
    "Every (BN, ReLU, Dropout) choice per conv giving 193,280 parameters and the seed's 6.49 / 7.24 MB."
    need = 193_280 - sum(r['ni']*r['nf']*r['ks']**2//r['groups'] for r in convs)  # parameters left for BN (2 a channel)
    size = [r['nf']*r['size']**2 for r in convs]
    ok = lambda act: seed_figures(act + extra, 193_280) == (6.49, 7.24)
    acts = [a for a in range(0, 4*sum(size) + 1, 2) if ok(a)]
    lo, hi, hits = min(acts), max(acts), []
    def dfs(i, bn, act, sol):  # depth-first, pruned by the parameter budget and the reachable activation range
        if bn > need or act + sum(size[i:]) > hi or act + 4*sum(size[i:]) < lo: return
        if i == len(convs):
            if bn == need and ok(act): hits.append(sol)
            return
        for o in OPTS: dfs(i + 1, bn + 2*convs[i]['nf']*o[0], act + size[i]*(1 + sum(o)), sol + (o,))
    dfs(0, 0, 0, ())
    return hits

def describe(convs, sol, cur):
    names = ('BN', 'ReLU', 'Dropout')
    return '; '.join(f"{convs[i]['name']}: {'+'.join(n for n, b in zip(names, o) if b) or 'nothing'} after the conv"
                     for i, o in enumerate(sol) if o != cur[i])

@call_parse
def main(show:int=25):  # how many of the nearest placements to list
    "Print the count of placements that fit the seed's figures and the nearest to fastcifar's layout."
    rows = layer_table()
    convs = [r for r in rows if r['op'] == 'conv']
    extra = sum(r['nf']*r['size']**2 for r in rows if r['op'] == 'avg')
    cur = tuple(tuple(int(o in r['after']) for o in ('bn', 'relu', 'drop')) for r in convs)
    act = sum(r['nf']*r['size']**2*(1 + len(r['after'])) for r in convs) + extra
    hits = fits(convs, extra)
    dist = lambda s: sum(a != b for a, b in zip(s, cur))
    print(f'{time.strftime("%Y-%m-%d")}: placements of BN/ReLU/Dropout on the seed\'s 11 convolutions')
    print(f"fastcifar's layout: torchsummary {seed_figures(act, 193_280)} MB; the seed printed (6.49, 7.24)")
    print(f'placements that fit both figures: {len(hits)}; by number of convs that differ from fastcifar\'s: '
          + ', '.join(f'{k}: {v}' for k, v in sorted(Counter(map(dist, hits)).items())))
    for s in sorted(hits, key=lambda s: (dist(s), s))[:show]: print(f'  {dist(s)} | ' + (describe(convs, s, cur) or "fastcifar's layout"))
