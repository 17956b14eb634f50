"The multi-seed runner: one run folder a seed, resumed or skipped as they stand, and a summary of real statistics."
import json, statistics, pytest
from fastcifar.files import RunFolder
from fastcifar.seeds import main, run_seeds, summarise

def test_two_seeds_run_and_summarise(tiny_tgz, tmp_path):
    RunFolder(tmp_path/'s'/'seed2').close()  # seed 2's run was killed before its first epoch: its folder holds the marker only
    sm = run_seeds([1, 2], tmp_path/'s', 2, data=str(tiny_tgz), epochs=1, bs=32, precision='fp32')  # side by side, a core each
    res = [json.loads((tmp_path/'s'/f'seed{s}'/'results.json').read_text()) for s in (1, 2)]
    assert sm['n'] == 2 and sm['seeds'] == [1, 2] and [r['random_seed'] for r in res] == [1, 2] and not sm['failed']
    acc = [r['final_test_accuracy'] for r in res]
    assert sm['final_test_accuracy']['mean'] == pytest.approx(statistics.fmean(acc))
    assert sm['final_test_accuracy']['sd'] == pytest.approx(statistics.stdev(acc)) and sm['final_test_accuracy']['min'] == min(acc)
    multi = [r['final_test_accuracy_multi_tta'] for r in res]
    assert sm['final_test_accuracy_multi_tta']['mean'] == pytest.approx(statistics.fmean(multi))
    assert json.loads((tmp_path/'s'/'summary.json').read_text())['n'] == 2
    assert 'final test accuracy' in (tmp_path/'s'/'summary.md').read_text()
    assert 'final test accuracy multi tta' in (tmp_path/'s'/'summary.md').read_text()
    # a second call trains nothing (both runs are finished): the folders stay as they are
    before = [(tmp_path/'s'/f'seed{s}'/'history.csv').stat().st_mtime_ns for s in (1, 2)]
    assert run_seeds([1, 2], tmp_path/'s', data=str(tiny_tgz), epochs=1, bs=32)['n'] == 2
    assert [(tmp_path/'s'/f'seed{s}'/'history.csv').stat().st_mtime_ns for s in (1, 2)] == before

def test_a_failed_seed_is_reported(tiny_tgz, tmp_path):
    with pytest.raises(SystemExit, match='1 of 1 runs failed'):
        main(['--data', str(tiny_tgz), '--out', str(tmp_path/'s'), '--seeds', '3', '--epochs', '1', '--bs', '0'])
    assert summarise([tmp_path/'s'/'seed3'])['n'] == 0

def test_switches_pass_through_both_ways(tmp_path):
    "A recipe's on/off setting given either way reaches each run's command line (--nesterov, --no-nesterov)"
    from fastcifar.seeds import _argv
    assert '--nesterov' in _argv(dict(nesterov=True, epochs=2), 1, tmp_path/'seed1')
    assert '--no-nesterov' in _argv(dict(nesterov=False), 1, tmp_path/'seed1')
    assert not any('nesterov' in a for a in _argv(dict(nesterov=None, resume=False), 1, tmp_path/'seed1'))

def test_every_command_line_parses_with_and_without_compile(tmp_path):
    "What the seeds runner's own flags become is a command line the trainer accepts: --compile has no --no- form."
    from fastcifar.recipe import parser
    from fastcifar.seeds import _argv
    for given in ([], ['--compile'], ['--recipe', 'improved', '--no-nesterov', '--aug', 'batch']):
        settings = vars(parser().parse_args(given))
        argv = _argv(settings, 4, tmp_path/'seed4')
        args = vars(parser().parse_args(argv))  # argparse exits on a flag it does not know
        assert args['compile'] is ('--compile' in given) and args['random_seed'] == 4 and '--no-compile' not in argv

def test_parallel_cpu_runs_share_the_cores(monkeypatch):
    "On the CPU, N runs at once get cores/N threads each (at least one); a thread count the user set is kept; GPUs untouched."
    import os
    from fastcifar.seeds import _env
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setattr(os, 'cpu_count', lambda: 16)
    assert _env(2, cuda=False)['OMP_NUM_THREADS'] == '8' and _env(32, cuda=False)['OMP_NUM_THREADS'] == '1'
    assert 'OMP_NUM_THREADS' not in _env(1, cuda=False) and 'OMP_NUM_THREADS' not in _env(4, cuda=True)
    monkeypatch.setenv('OMP_NUM_THREADS', '3')
    assert _env(2, cuda=False)['OMP_NUM_THREADS'] == '3'
