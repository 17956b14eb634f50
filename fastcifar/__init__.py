"""fastcifar: the fastai way to train, understand and ship a small, efficient CIFAR-10 CNN."""
import warnings
# fastai.layers decorates a few activations with torch.jit.script, which this torch deprecates at import time
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
__version__ = '0.1.0'
