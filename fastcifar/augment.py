"""The seed's augmentation (an `aug_spec` dict) run on whole batches on their device: flip, affine, cutout, each image
drawing its own parameters from the same distributions as albumentations 2.0.8's HorizontalFlip, Affine, CoarseDropout."""
import torch, torch.nn.functional as F
from fastai.vision.core import DisplayedTransform, TensorImage  # not .all: see fastcifar.data

__all__ = ['draw_params', 'affine_theta', 'affine_grid', 'warp', 'hole_mask', 'mirror', 'apply_params', 'BatchAug', 'batch_augs',
           'AlternatingFlip']

_COLS = ('flip', 'affine', 'tx', 'ty', 'sx', 'sy', 'rot', 'cutout', 'n')  # then 4 columns (h, w, y, x) per hole

def _sides(u, rng, side):
    "Hole sides from uniforms `u`: ints pixels (inclusive), floats int(side*U) as albumentations (its test: hi >= 1)."
    lo, hi = rng
    if hi >= 1: return lo + (u*(min(hi, side) - lo + 1)).floor()
    return (side*(lo + u*(hi - lo))).floor()

def draw_params(spec, bs, h=32, w=32, gen=None):
    "Per-image parameters of `spec` for a batch of `bs` (h,w) images, from one draw of `gen`: dict of CPU tensors."
    k = spec['holes'][1]
    u = torch.rand(bs, len(_COLS) + 4*k, generator=gen, dtype=torch.float64)  # fixed consumption per batch: resumable
    c = dict(zip(_COLS, u.T))
    lo, hi = spec['scale']
    sx = lo + c['sx']*(hi - lo)
    # albumentations' Affine truncates the translation to whole pixels: int(U(-shift, shift)*side)
    p = dict(flip=c['flip'] < spec['flip'], affine=c['affine'] < spec['affine'], cutout=c['cutout'] < spec['cutout'],
             tx=((2*c['tx'] - 1)*spec['shift']*w).trunc(), ty=((2*c['ty'] - 1)*spec['shift']*h).trunc(),
             sx=sx, sy=sx if spec['same_scale'] else lo + c['sy']*(hi - lo), rot=(2*c['rot'] - 1)*spec['rotate'])
    hl = u[:, len(_COLS):].view(bs, k, 4)
    nlo, nhi = spec['holes']
    p['n'] = (nlo + c['n']*(nhi - nlo + 1)).floor().long()
    hh, hw = _sides(hl[..., 0], spec['hole'], h), _sides(hl[..., 1], spec['hole'], w)
    # hole corner uniform over the integers that keep it inside: [0, side - hole]
    y, x = (hl[..., 2]*(h - hh + 1)).floor(), (hl[..., 3]*(w - hw + 1)).floor()
    p['holes'] = torch.stack([y, x, hh, hw], -1).long()  # (bs,k,4): y, x, h, w
    return p

def affine_theta(tx, ty, sx, sy, rot, h=32, w=32):
    "`F.affine_grid`'s (B,2,3) theta (align_corners=True) of albumentations' Affine about the centre ((w-1)/2, (h-1)/2)."
    # albumentations: dst = c + t + R(rot) S (src - c), R = [[cos, sin], [-sin, cos]]; theta maps dst to src, and with
    # align_corners=True the normalised coordinate is (pixel - c)/c, so pixel centres sit where cv2 puts them.
    a = torch.deg2rad(rot.double())
    cos, sin, sx, sy = a.cos(), a.sin(), sx.double(), sy.double()
    cx, cy = (w - 1)/2, (h - 1)/2
    linv = torch.stack([torch.stack([cos/sx, -sin/sx], -1), torch.stack([sin/sy, cos/sy], -1)], -2)  # (S R)^-1, pixels
    d = torch.tensor([cx, cy], dtype=torch.float64)
    lin = linv*d/d[:, None]                                   # D^-1 (S R)^-1 D
    off = -(linv @ torch.stack([tx, ty], -1).double()[..., None])[..., 0]/d
    return torch.cat([lin, off[..., None]], -1)

def affine_grid(theta, h, w):
    "`F.affine_grid(theta, (B,C,h,w), align_corners=True)`, bit for bit, by broadcasting instead of its batched matmul."
    # Written out because affine_grid's (B,h*w,3) x (B,3,2) bmm took ~0.8 ms a batch of 64 on one CPU thread, a
    # quarter of the whole augmentation; the same products and sums by broadcasting take half that.
    xs, ys = (torch.linspace(-1, 1, n, dtype=theta.dtype, device=theta.device) for n in (w, h))
    t = theta[:, None, None]  # (B,1,1,2,3)
    return torch.stack([t[..., r, 0]*xs + t[..., r, 1]*ys[:, None] + t[..., r, 2] for r in (0, 1)], -1)

def warp(x, theta, border='reflect101'):
    "Images `x` (B,C,H,W) float warped bilinearly by `theta`: cv2.warpAffine's INTER_LINEAR with `border`."
    # grid_sample's reflection with align_corners=True mirrors about the edge pixels' centres: cv2's BORDER_REFLECT_101
    grid = affine_grid(theta.to(x.device, x.dtype), *x.shape[-2:])
    return F.grid_sample(x, grid, mode='bilinear', padding_mode=dict(reflect101='reflection', constant='zeros')[border],
                         align_corners=True)

def hole_mask(holes, active, h=32, w=32):
    "(B,H,W) bool: pixels inside any active hole; `holes` (B,K,4) y,x,h,w, `active` (B,K) bool."
    r = torch.arange(max(h, w), device=holes.device)
    y, x, hh, hw = holes.unbind(-1)
    iny = (r[:h] >= y[..., None]) & (r[:h] < (y + hh)[..., None]) & active[..., None]  # (B,K,H): rows of active holes
    inx = (r[:w] >= x[..., None]) & (r[:w] < (x + hw)[..., None])                      # (B,K,W)
    # one (B,H,W) outer product a hole slot (K is 1 or 2), OR-ed in place: a third of the time of a (B,K,H,W) mask
    m = iny[:, 0, :, None] & inx[:, 0, None, :]
    for k in range(1, holes.shape[1]): m |= iny[:, k, :, None] & inx[:, k, None, :]
    return m

def mirror(x, m):
    "A copy of images `x` (B,C,H,W) with those where `m` (B,) is True flipped left-right."
    # the mask expanded to x's shape: torch.where's broadcast of a (B,1,1,1) mask is slower than the full mask
    return torch.where(m.to(x.device)[:, None, None, None].expand_as(x), x.flip(-1), x)

def apply_params(x, p, spec):
    "Flip, affine, cutout of `spec` on float [0,1] images `x` (B,C,H,W) with the drawn parameters `p` (see `draw_params`)."
    dev, (_, nc, h, w) = x.device, x.shape
    x = mirror(x, p['flip'])
    idx = p['affine'].nonzero()[:, 0]  # on the CPU: no device sync
    if len(idx):  # x is already a copy (torch.where)
        th = affine_theta(*(p[k][idx] for k in ('tx', 'ty', 'sx', 'sy', 'rot')), h, w)
        x[idx.to(dev)] = warp(x[idx.to(dev)], th, spec['border'])
    if spec['cutout']:
        active = (torch.arange(p['holes'].shape[1]) < p['n'][:, None]) & p['cutout'][:, None]
        m = hole_mask(p['holes'].to(dev), active.to(dev), h, w)
        # pixels scaled as IntToFloatTensor scales them: the fill is bit-exact
        fill = torch.tensor(spec['fill'], dtype=torch.float32).expand(nc).div(255).tolist()
        for c in range(nc): x[:, c].masked_fill_(m, fill[c])  # x is already a copy (torch.where): in place
    return x

class BatchAug(DisplayedTransform):
    "The augmentation `spec` on a float [0,1] batch, on its device, per image; training split only, before `Normalize`."
    split_idx, order = 0, 30  # after IntToFloatTensor (10), before Normalize (99)
    def __init__(self, spec, seed=None):
        super().__init__()
        self.spec, self.seed = dict(spec), seed
        s = seed if seed is not None else int(torch.randint(2**62, (1,)))  # from torch's global stream: set_seed fixes it
        self.gen = torch.Generator().manual_seed(s)
    def encodes(self, x:TensorImage):
        t = x.as_subclass(torch.Tensor)  # plain tensor: TensorImage's dispatch costs on every op
        out = apply_params(t, draw_params(self.spec, len(t), *t.shape[-2:], gen=self.gen), self.spec)
        cl = t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
        if cl: out = out.contiguous(memory_format=torch.channels_last)
        return out.as_subclass(type(x))
    def state(self): return dict(gen=self.gen.get_state())
    def set_state(self, st): self.gen.set_state(st['gen'])

def batch_augs(spec, seed=None):
    "The batch transform executing augmentation `spec` (see `data.aug_spec`), seeded by `seed`."
    return BatchAug(spec, seed)

class AlternatingFlip:
    "Flips that alternate: image `i` is mirrored in epoch `e` if `first[i]` xor `e` is odd; `first` drawn once (probability `p`)."
    # Each image is seen both ways in any two epochs, where independent flips repeat one side half the time. It needs
    # each image's index and the epoch, which no batch transform is told: `data.StackedDL` applies it as it indexes a batch.
    def __init__(self, n, p=0.5, seed=None):
        s = seed if seed is not None else int(torch.randint(2**62, (1,)))
        self.first = torch.rand(n, generator=torch.Generator().manual_seed(s), dtype=torch.float64) < p
    def mask(self, idx, epoch):
        "(B,) bool: which of the images `idx` are mirrored in `epoch`."
        return self.first[idx] ^ bool(epoch % 2)
    def __call__(self, x, idx, epoch):
        "Images `x` (B,C,H,W) of indices `idx`, mirrored as `epoch` says; a copy of the same type."
        return mirror(x.as_subclass(torch.Tensor), self.mask(idx, epoch)).as_subclass(type(x))
