"The committed runs under results/: complete, self-consistent, and quoted in the README as they are."
import csv, json, pytest
from pathlib import Path
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RUNS = sorted(p.parent for p in (ROOT/'results').glob('*/results.json'))
README = (ROOT/'README.md').read_text()

def pct(x): return f'{100*x:.2f}%'

def test_there_are_committed_runs():
    assert RUNS, 'no run under results/'

@pytest.mark.parametrize('run', RUNS, ids=lambda p: p.name)
def test_run_folder_is_complete_and_consistent(run):
    for f in ('history.csv', 'curves.png', 'confusion_matrix.png', 'results.json', 'RUN.md'): assert (run/f).stat().st_size > 0, f
    for f in ('checkpoint.pth', 'model.pkl', 'model.safetensors'): assert not (run/f).exists(), f'{f}: weights are not committed'
    for png in ('curves.png', 'confusion_matrix.png'): assert min(Image.open(run/png).size) > 300
    res = json.loads((run/'results.json').read_text())
    with open(run/'history.csv') as f: rows = list(csv.DictReader(f))
    acc = [float(r['test_accuracy']) for r in rows]
    assert [int(r['epoch']) for r in rows] == list(range(1, res['epochs'] + 1))
    assert res['final_test_accuracy'] == pytest.approx(acc[-1], abs=1e-5)
    assert res['best_test_accuracy'] == pytest.approx(max(acc), abs=1e-5) and res['best_epoch'] == acc.index(max(acc)) + 1
    assert res['final_train_accuracy'] == pytest.approx(float(rows[-1]['train_accuracy']), abs=1e-5)
    assert res['train_seconds'] == pytest.approx(sum(float(r['seconds']) for r in rows), rel=1e-4)
    assert res['params'] == 193_280

@pytest.mark.parametrize('run', RUNS, ids=lambda p: p.name)
def test_readme_quotes_the_committed_figures(run):
    "The README's results table links every run and quotes its final, best and flip-TTA accuracy as recorded."
    res = json.loads((run/'results.json').read_text())
    line = next((l for l in README.splitlines() if l.startswith('|') and f'results/{run.name}/' in l), None)
    assert line, f'README results table has no row for results/{run.name}'
    for k in ('final_test_accuracy', 'best_test_accuracy', 'final_test_accuracy_flip_tta'): assert pct(res[k]) in line, k

@pytest.mark.parametrize('run', RUNS, ids=lambda p: p.name)
def test_readme_per_epoch_table_is_the_history(run):
    "A row of the README's per-epoch table is the run's test accuracy at epochs 1, 5, 10, ..., 30 from history.csv."
    with open(run/'history.csv') as f: rows = list(csv.DictReader(f))
    want = ' | '.join(pct(float(rows[e-1]['test_accuracy'])) for e in (1, 5, 10, 15, 20, 25, 30))
    assert any(l.startswith('| ') and l.endswith(f'| {want} |') for l in README.splitlines()), want
