import numpy as np
import re, subprocess, sys, pytest, torch
from pathlib import Path
from fastcifar.model import LAYERS, Dropout, Net, layer_table, n_params, summary, markdown_table

def test_param_count_is_the_seeds():
    assert n_params(Net()) == 193_280 == sum(r['params'] for r in layer_table())

def test_table_sizes_match_the_seed():
    # 32x32 -> 30 -> 28 -> 24 -> 24 -> 24 -> 24 -> 22 -> 10 -> 10 -> 5 -> 5 -> 5 -> 1 (then the 1x1 logits conv)
    assert [r['size'] for r in layer_table()] == [30, 28, 24, 24, 24, 24, 22, 10, 10, 5, 5, 5, 1, 1]

def test_every_layer_output_shape_matches_the_table():
    m, shapes = Net().eval(), []
    layers = [l for blk in m for l in blk]
    hooks = [l.register_forward_hook(lambda mod, i, o: shapes.append(tuple(o.shape[1:]))) for l in layers]
    m(torch.randn(2, 3, 32, 32))
    for h in hooks: h.remove()
    assert shapes == [(r['nf'], r['size'], r['size']) for r in layer_table()]

def test_receptive_field():
    # r += (k-1)*d*j; j *= s, layer by layer
    assert [r['rf'] for r in layer_table()] == [3, 5, 9, 9, 11, 11, 13, 15, 15, 17, 25, 33, 49, 49]

def test_layer_params_match_modules():
    m = Net()
    mods = [l for blk in m for l in blk]
    assert [sum(p.numel() for p in l.parameters()) for l in mods] == [r['params'] for r in layer_table()]
    assert sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules()) == sum(r['bn'] for r in layer_table())
    assert sum(isinstance(x, torch.nn.Dropout) and x.p == 0.05 for x in m.modules()) == sum('drop' in r['after'] for r in layer_table()) == 8
    assert [type(x).__name__ for x in m.c2.dw] == ['Conv2d', 'BatchNorm2d', 'ReLU']  # the separable pair's dropout is after pw
    m0 = Net(dropout=0.)  # the improved recipe's Net: same parameters, no dropout
    assert n_params(m0) == 193_280 and [x.p for x in m0.modules() if isinstance(x, torch.nn.Dropout)] == [0.]*8
    dw = m.c2.dw[0]
    assert dw.groups == 32 and dw.padding == (1, 1) and m.c1.dilated[0].dilation == (2, 2) and m.c3.strided[0].stride == (2, 2)

def test_logits_grads_and_no_nans():
    torch.manual_seed(0)
    m = Net()
    out = m(torch.randn(8, 3, 32, 32))
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.randint(0, 10, (8,))).backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n

def test_summary_cli_prints_the_table():
    out = subprocess.run([sys.executable, '-m', 'fastcifar.model'], capture_output=True, text=True, check=True).stdout
    assert out.strip() == summary()
    assert 'Total trainable parameters: 193,280' in out and 'Receptive field: 49' in out
    assert len([l for l in out.splitlines() if re.match(r'c\d\.|out\.', l)]) == len(LAYERS)

def test_readme_architecture_table_is_derived_from_the_code():
    readme = (Path(__file__).parents[1]/'README.md').read_text()
    assert markdown_table() in readme

@pytest.mark.parametrize('p', [0.05, 0.5])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last', 'transposed'])
def test_dropout_keeps_1_minus_p_and_scales_the_rest(p, layout):
    x = torch.rand(64, 32, 24, 24) + 0.5  # no zeros of its own; 1.2M elements
    x = {'contiguous': x, 'channels_last': x.contiguous(memory_format=torch.channels_last), 'transposed': x.transpose(2, 3)}[layout]
    d = Dropout(p).train()
    torch.manual_seed(0); y = d(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.stride() == x.stride()
    drop = y == 0
    sd = (p*(1-p)/x.numel())**0.5
    assert abs(drop.float().mean().item() - p) < 5*sd
    per_channel = drop.float().mean((0, 2, 3))  # no channel or position favoured by the memory order
    assert (per_channel - p).abs().max() < 5*(p*(1-p)/(x.numel()//x.shape[1]))**0.5
    assert torch.equal(y[~drop], x[~drop]*torch.tensor(1/(1-p)))
    torch.manual_seed(0); assert torch.equal(d(x), y)  # torch's seed fixes the mask
    assert not torch.equal(d(x), y)                     # and the next call draws a new one

def test_dropout_gradient_is_the_mask_and_eval_is_identity():
    x = (torch.rand(16, 8, 10, 10) + 0.5).requires_grad_()
    d = Dropout(0.2)
    y = d(x); y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float()/0.8)
    d.eval(); assert torch.equal(d(x), x)
    assert torch.equal(Dropout(0.).train()(x), x)
    xb = torch.rand(8, 8, 10, 10).bfloat16() + 0.5
    yb = Dropout(0.05).train()(xb)
    # the scale applied in float, then rounded once to bf16, as torch's own dropout does
    assert yb.dtype == torch.bfloat16 and torch.equal(yb[yb != 0], (xb[yb != 0].float()*(1/0.95)).bfloat16())

def test_torchsummary_prints_the_seeds_figures(capsys):
    # the seed printed its model with the torchsummary package: parameters and activation memory pin the layout
    torchsummary = pytest.importorskip('torchsummary', reason='torchsummary is in the dev extra')
    torchsummary.summary(Net(), (3, 32, 32), device='cpu')
    out = capsys.readouterr().out
    for line in ('Total params: 193,280', 'Non-trainable params: 0', 'Input size (MB): 0.01',
                 'Forward/backward pass size (MB): 6.49', 'Params size (MB): 0.74', 'Estimated Total Size (MB): 7.24'):
        assert line in out, line

def test_dropout_positions_are_independent_bernoulli_draws():
    "The dropped positions: sorted, distinct, in range; counts binomial in mean and variance; neighbours independent."
    d, n, p = Dropout(0.05), 2000, 0.05
    torch.manual_seed(0)
    draws = [d.positions(n) for _ in range(2000)]
    assert all(len(q) == 0 or (q[0] >= 0 and q[-1] < n and (np.diff(q) > 0).all()) for q in draws)
    counts = np.array([len(q) for q in draws])
    assert abs(counts.mean() - n*p) < 5*(n*p*(1-p)/len(draws))**0.5          # mean n p
    assert abs(counts.var(ddof=1)/(n*p*(1-p)) - 1) < 0.15                    # binomial variance (not Poisson's n p)
    pairs = np.mean([np.isin(q + 1, q).sum()/(n - 1) for q in draws])        # both of two neighbours dropped: p^2
    assert abs(pairs - p*p) < 5*(p*p/(len(draws)*(n - 1)))**0.5
    assert all(len(d.positions(1)) <= 1 for _ in range(100)) and Dropout(0.999).positions(50).size > 40

def test_dropout_takes_any_layout_and_its_gradient_any_layout():
    "A strided (non-dense) input and a gradient in another memory format than the input: the same mask both ways."
    x = (torch.rand(8, 6, 10, 10) + 0.5)
    for xin in (x[:, ::2], x.contiguous(memory_format=torch.channels_last)):
        xin = xin.detach().requires_grad_()
        y = Dropout(0.3).train()(xin)
        g = torch.ones_like(y).contiguous()  # contiguous whatever y's layout
        y.backward(g)
        assert torch.equal(xin.grad != 0, y != 0) and torch.allclose(xin.grad[y != 0], torch.tensor(1/0.7))

def test_dropout_under_torch_compile_draws_as_eager_without_recompiling():
    "Compiled, the CPU draw runs eagerly (a graph break): the same positions from the same seed, no recompile a step."
    import torch._dynamo
    d, x = Dropout(0.05).train(), torch.randn(4, 8, 16, 16)
    torch.manual_seed(0); eager = [d(x) for _ in range(3)]
    c = torch.compile(d, backend='eager')
    torch.manual_seed(0)
    with torch._dynamo.config.patch(error_on_recompile=True): comp = [c(x) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(eager, comp)) and not torch.equal(eager[0], eager[1])
