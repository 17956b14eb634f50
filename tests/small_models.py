"Small user models for tests/test_train.py's `--model module:callable` cases."
from torch import nn

class Small(nn.Sequential):
    def __init__(self, width=8):
        super().__init__(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, 10))
        self.width = width

def make(width=8): return Small(width)

def make_bn1d():
    "BatchNorm after the pooling: it cannot train on a batch of one image."
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(8), nn.Linear(8, 10))
