"The recipe as data: one table of settings gives train()'s keywords, the CLI and its help, checks and rerun commands."
import re, pytest
from fastcifar.data import SEED_AUG, aug_spec
from fastcifar.recipe import DEFAULTS, RECIPES, RECIPE_KEYS, SETTINGS, RecipeError, parser, recipe_of, rerun_command, resolve

def test_given_beats_recipe_beats_default():
    cfg = resolve(recipe='improved', wd=1e-4)
    assert cfg['wd'] == 1e-4 and cfg['label_smoothing'] == 0.1 and cfg['dropout'] == 0. and cfg['cutout'] == 0
    assert cfg['epochs'] == DEFAULTS['epochs'] == 30 and cfg['bs'] == 128 and cfg['lr'] == 0.05
    assert resolve() == {**DEFAULTS, **RECIPES['seed']}
    assert all(set(r) == set(RECIPE_KEYS) for r in RECIPES.values())  # every recipe sets the same settings

@pytest.mark.parametrize('kw,msg', [(dict(epochs=0), '--epochs 0: must be 1 or more'), (dict(recipe='fast'), '--recipe fast: unknown'),
                                    (dict(cutout=33), '--cutout 33: must be from 0 (no cutout) to 32 pixels'),
                                    (dict(aug_spec='albu1'), '--aug-spec albu1: must be readme or albu2 or translate'),
                                    (dict(flip='sometimes'), '--flip sometimes: must be random or alternate'),
                                    (dict(flip='alternate'), '--flip alternate: needs --aug batch'),
                                    (dict(learning_rate=1), "unknown setting 'learning_rate'")])
def test_bad_settings_name_the_flag(kw, msg):
    with pytest.raises(RecipeError, match=re.escape(msg)): resolve(**kw)

def test_the_command_line_is_the_table():
    p = parser()
    flags = {a.option_strings[0] for a in p._actions if a.option_strings and a.dest != 'help'}
    assert flags == {s.flag for s in SETTINGS}
    assert vars(p.parse_args([])) == {s.name: (False if s.default is False else None) for s in SETTINGS}
    assert p.parse_args(['--nesterov']).nesterov is True and p.parse_args(['--no-nesterov']).nesterov is False
    assert p.parse_args(['--label-smoothing', '0.2', '--resume']).label_smoothing == 0.2
    help = re.sub(r'-\n\s*', '-', p.format_help())  # argparse may wrap a line after the hyphen of 'seed-readme'
    assert 'seed 0.0001; seed-readme 0.0001; improved 0.0005' in ' '.join(help.split())  # each recipe's value
    assert 'seed True; seed-readme True; improved True' in ' '.join(help.split())  # a switch's too

def test_rerun_command_has_no_machine_paths():
    cfg = resolve(data='/home/me/data/cifar10.tgz', out='/scratch/runs/r7', recipe='improved', epochs=5, workers=4, resume=True)
    assert rerun_command(cfg) == 'python -m fastcifar.train --data cifar10.tgz --out runs/r7 --recipe improved --epochs 5'
    assert rerun_command(resolve(recipe='improved', wd=1e-4)) == 'python -m fastcifar.train --recipe improved --wd 0.0001'
    assert rerun_command(resolve(nesterov=True)) == 'python -m fastcifar.train --recipe seed --nesterov'

def test_the_default_is_the_seeds_calls_under_albumentations_2():
    "`--recipe seed` and the data's default augmentation are one declaration: albu2; the README's words are seed-readme."
    assert RECIPES['seed']['aug_spec'] == SEED_AUG == 'albu2' and RECIPES['seed-readme']['aug_spec'] == 'readme'
    assert aug_spec() == aug_spec('albu2') and aug_spec()['holes'] == (1, 2) and aug_spec()['border'] == 'constant'
    assert {k: v for k, v in RECIPES['seed'].items() if k != 'aug_spec'} == {k: v for k, v in RECIPES['seed-readme'].items() if k != 'aug_spec'}

def test_recipe_of_names_runs_by_their_settings():
    "Runs made before the rename recorded 'seed' (the README's words) and 'seed-albu2': their settings say what they are today."
    old_readme = dict(RECIPES['seed-readme'], recipe='seed')
    assert recipe_of(old_readme) == 'seed-readme' and recipe_of(dict(RECIPES['seed'], recipe='seed-albu2')) == 'seed'
    assert recipe_of(dict(old_readme, dropout=0.)) == 'seed-readme'              # nearest: one setting changed
    assert recipe_of(dict(RECIPES['improved'], recipe='seed', cutout=8)) == 'improved'
    halfway = dict(RECIPES['seed-readme'], wd=5e-4, label_smoothing=0.1)         # two settings from each of two recipes
    assert recipe_of(dict(halfway, recipe='improved')) == 'improved' and recipe_of(dict(halfway, recipe='seed-readme')) == 'seed-readme'
