"For tests/test_distributed.py: `python -m fastcifar.train`'s run, then this rank's final weights, steps and augmentation RNG saved to the folder argv[1]."
import os, sys, torch
from fastai.torch_core import rank_distrib
from fastcifar.recipe import parser
from fastcifar.train import train
from fastcifar.distributed import world_size
from fastcifar.model import bare_model

if __name__ == '__main__':
    dump, argv = sys.argv[1], sys.argv[2:]
    learn = train(**vars(parser().parse_args(argv)))
    aug = learn.dls.train.after_item.fs.filter(lambda t: hasattr(t, 'aug')).map(lambda t: t.aug)
    r = rank_distrib()
    torch.save(dict(rank=r, world_size=world_size(), model=bare_model(learn.model).state_dict(), train_iter=learn.train_iter,
                    aug=aug[0].random_generator.bit_generator.state if len(aug) else None), os.path.join(dump, f'rank{r}.pth'))
