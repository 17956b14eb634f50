"""The seed's CIFAR-10 Net, built from one layer table."""
import numpy as np, torch
from collections import OrderedDict
from torch import nn

__all__ = ['LAYERS', 'MODEL_VERSION', 'DROPOUT', 'Dropout', 'Net', 'bare_model', 'layer_table', 'n_params', 'summary', 'markdown_table']

# The seed's layer table: (name, op, nf, ks, stride, pad, dilation, groups, after), `after` the modules that follow
# the conv: 'bn relu drop' is Conv -> BatchNorm -> ReLU -> Dropout(0.05); '' a plain linear projection.
# Two of the seed's printed figures pin the layout (bench/layouts.py lists every placement that fits both):
# - 193,280 parameters: BatchNorm off the two 1x1 channel-squeezing transitions (C2, C3) and the logits conv;
# - torchsummary's 6.49 MB forward/backward size: one 32x24x24 module output fewer than a full unit on every BN'd
#   conv. The depthwise conv is followed by BN -> ReLU without its own Dropout: the depthwise-separable pair is one
#   unit (MobileNet's dw -> BN -> ReLU -> pw -> BN -> ReLU), with dropout once, at its end.
# All convs have no bias (BN follows, or they are linear projections).
LAYERS = [
    ('c1.conv1',  'conv', 32, 3, 1, 0, 1, 1,  'bn relu drop'),  # 32 -> 30
    ('c1.conv2',  'conv', 64, 3, 1, 0, 1, 1,  'bn relu drop'),  # 30 -> 28
    ('c1.dilated','conv', 64, 3, 1, 0, 2, 1,  'bn relu drop'),  # 28 -> 24, dilation 2
    ('c2.squeeze','conv', 32, 1, 1, 0, 1, 1,  ''),              # 1x1 transition
    ('c2.dw',     'conv', 32, 3, 1, 1, 1, 32, 'bn relu'),       # depthwise 3x3: one unit with the pointwise conv
    ('c2.pw',     'conv', 64, 1, 1, 0, 1, 1,  'bn relu drop'),  # pointwise 1x1
    ('c2.conv',   'conv', 64, 3, 1, 0, 1, 1,  'bn relu drop'),  # 24 -> 22
    ('c3.strided','conv', 64, 3, 2, 0, 1, 1,  'bn relu drop'),  # 22 -> 10, stride 2
    ('c3.squeeze','conv', 32, 1, 1, 0, 1, 1,  ''),              # 1x1 transition
    ('c3.pool',   'avg',  32, 2, 2, 0, 1, 1,  ''),              # 10 -> 5
    ('c4.conv1',  'conv', 64, 3, 1, 1, 1, 1,  'bn relu drop'),  # 5 -> 5
    ('c4.conv2',  'conv', 64, 3, 1, 1, 1, 1,  'bn relu drop'),  # 5 -> 5
    ('c4.gap',    'avg',  64, 5, 5, 0, 1, 1,  ''),              # 5 -> 1, global average pool
    ('out.conv',  'conv', 10, 1, 1, 0, 1, 1,  ''),              # logits
]
MODEL_VERSION = 2  # 1: Dropout after the depthwise conv too (runs before 2026-11-26's layout fix); 2: as above
DROPOUT = 0.05

def layer_table(ni=3, size=32):
    "Each layer of `LAYERS` with its input/output channels and size, receptive field and parameters."
    rows, rf, jump = [], 1, 1
    for name, op, nf, ks, s, p, d, g, after in LAYERS:
        after = after.split(); bn = 'bn' in after
        out = (size + 2*p - d*(ks-1) - 1)//s + 1
        rf, jump = rf + (ks-1)*d*jump, jump*s  # standard recursion: r += (k-1)*d*j; j *= s
        params = ni*nf*ks*ks//g + 2*nf*bn if op == 'conv' else 0
        rows.append(dict(name=name, op=op, ni=ni, nf=nf, ks=ks, stride=s, pad=p, dilation=d, groups=g,
                         bn=bn, after=after, size_in=size, size=out, rf=rf, params=params))
        ni, size = nf, out
    return rows

def _flat(x):
    "A 1-D view of `x`, a freshly made (dense, offset 0) tensor, in its memory order (contiguous, channels-last, ...)."
    return x.as_strided((x.numel(),), (1,))

class _DropAt(torch.autograd.Function):
    "x * scale with the elements at `pos` (positions in the result's memory order) zeroed; the gradient likewise."
    @staticmethod
    def forward(ctx, x, pos, scale):
        y = x.mul(scale)  # a new dense tensor (x's dimension order), the scale applied in float (as torch's own dropout)
        _flat(y).index_fill_(0, pos, 0)
        ctx.save_for_backward(pos); ctx.scale, ctx.layout = scale, (y.shape, y.stride())
        return y
    @staticmethod
    def backward(ctx, g):
        pos, = ctx.saved_tensors
        gx = torch.empty_strided(*ctx.layout, dtype=g.dtype, device=g.device)  # y's layout: `pos` indexes its memory order
        torch.mul(g, ctx.scale, out=gx)
        _flat(gx).index_fill_(0, pos, 0)
        return gx, None, None

class Dropout(nn.Dropout):
    "`nn.Dropout`, with the CPU training mask drawn as the gaps between dropped elements: torch's CPU `bernoulli_` draws one element at a time."
    # torch's `bernoulli_` on the CPU uses MKL only on Intel processors; elsewhere it runs a serial loop (~5 ns an
    # element, about half of this Net's CPU training step). The dropped elements of i.i.d. Bernoulli(p) draws are a
    # Bernoulli process: the gaps between them are geometric, and floor(E/-log(1-p)) + 1 with E ~ Exp(1) is exactly
    # geometric(p). So only the ~5% dropped positions are drawn (numpy's ziggurat exponentials, ~4 ns each), and the
    # mask is applied as one scale of x and a sparse fill (`_DropAt`): the same law as torch's, element by element.
    # The stream is seeded from torch's generator, so `set_seed` and checkpoints (torch's RNG state) still fix it.
    def forward(self, x):
        if not (self.training and 0 < self.p < 1 and x.device.type == 'cpu') or self.inplace: return super().forward(x)
        return self._drop(x)
    # Under torch.compile: numpy's generator cannot be traced, and tracing into it specialises on each drawn seed (a
    # recompile a step until dynamo's limit); so the CPU draw and fill run eagerly, a clean graph break each.
    # `torch.compiler.disable` as a decorator imports torch._dynamo with this module (2 s of every start of the
    # predict and train commands); torch's own `_disable_dynamo` does the same but imports dynamo at the first call.
    @getattr(torch, '_disable_dynamo', torch.compiler.disable)
    def _drop(self, x): return _DropAt.apply(x, torch.from_numpy(self.positions(x.numel())), 1/(1 - self.p))
    def positions(self, n):
        "Sorted int64 positions in [0, n) of the dropped elements: each element dropped independently with probability p."
        rng = np.random.Generator(np.random.PCG64(int(torch.randint(2**62, (), dtype=torch.int64))))
        lam, mean = -np.log1p(-self.p), n*self.p
        k = int(mean + 6*(mean*(1 - self.p))**0.5) + 16  # draws for n elements but once in ~1e9 calls
        last, out = -1, []
        while last < n:
            pos = last + np.cumsum(np.floor(rng.standard_exponential(k)/lam).astype(np.int64) + 1)
            out.append(pos[pos < n]); last = pos[-1]
        return np.concatenate(out)

def _layer(r, dropout=DROPOUT):
    if r['op'] == 'avg': return nn.AvgPool2d(r['ks'], r['stride'])
    conv = nn.Conv2d(r['ni'], r['nf'], r['ks'], r['stride'], r['pad'], r['dilation'], r['groups'], bias=False)
    if not r['after']: return conv
    make = dict(bn=lambda: nn.BatchNorm2d(r['nf']), relu=lambda: nn.ReLU(inplace=True), drop=lambda: Dropout(dropout))
    return nn.Sequential(conv, *(make[o]() for o in r['after']))

class Net(nn.Sequential):
    "The seed's four-block CNN (dilated, depthwise-separable, strided, GAP): 193,280 parameters."
    def __init__(self, dropout=DROPOUT):  # the probability of every Dropout: the seed's 0.05 (no parameters)
        blocks = {}
        for r in layer_table():
            block, name = r['name'].split('.')
            blocks.setdefault(block, nn.Sequential())
            blocks[block].add_module(name, _layer(r, dropout))
        super().__init__(OrderedDict(blocks))

    def forward(self, x):  # x: (B,3,32,32) -> (B,10) logits
        return super().forward(x).flatten(1)

def bare_model(m):
    "The model inside parallel wrappers (DataParallel, DistributedDataParallel) and `torch.compile`'s."
    while isinstance(m, (nn.DataParallel, nn.parallel.DistributedDataParallel)) or hasattr(m, '_orig_mod'):
        m = m._orig_mod if hasattr(m, '_orig_mod') else m.module
    return m

def n_params(model):
    "Number of trainable parameters."
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

_COLS = ('layer', 'type', 'kernel', 'stride', 'pad', 'dilation', 'output', 'channels', 'RF', 'params')

def _cells(r):
    names = dict(bn='BN', relu='ReLU', drop='Drop')
    kind = 'AvgPool' if r['op'] == 'avg' else '+'.join(['Conv dw' if r['groups'] > 1 else 'Conv'] + [names[o] for o in r['after']])
    return (r['name'], kind, f"{r['ks']}x{r['ks']}", r['stride'], r['pad'], r['dilation'],
            f"{r['size']}x{r['size']}", r['nf'], r['rf'], f"{r['params']:,}")

def summary():
    "The layer table as aligned text, with totals."
    rows = [_COLS] + [tuple(map(str, _cells(r))) for r in layer_table()]
    w = [max(len(r[i]) for r in rows) for i in range(len(_COLS))]
    lines = ['  '.join(c.rjust(w[i]) if i > 1 else c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    tot = sum(r['params'] for r in layer_table())
    return '\n'.join(lines + [f'Total trainable parameters: {tot:,}', f"Receptive field: {layer_table()[-1]['rf']}"])

def markdown_table():
    "The layer table as a Markdown table (the README's architecture table)."
    rows = [_cells(r) for r in layer_table()]
    tot = sum(r['params'] for r in layer_table())
    out = ['| ' + ' | '.join(_COLS) + ' |', '|' + '---|'*len(_COLS)]
    out += ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows]
    return '\n'.join(out + [f"| **total** | | | | | | | | | **{tot:,}** |"])

if __name__ == '__main__': print(summary())
