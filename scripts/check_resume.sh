# Resume check on SmolLM2 by hand: uninterrupted run A vs run B killed (SIGKILL) during an edit and during an evaluation.
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
M=".venv/bin/melo bench --preset smollm2-zsre --protocol lifelong --n-edits 30 --checkpoint-every 4 --quiet"
rm -rf runs/resume-a runs/resume-b
$M --out runs/resume-a > runs/resume-a.log 2>&1
# B: kill during an edit (state after T=10 evaluation, editing toward 30)
$M --out runs/resume-b > runs/resume-b1.log 2>&1 &
pid=$!
while ! grep -q '"n_edits": 10' runs/resume-b/metrics.jsonl 2>/dev/null; do sleep 1; done
sleep 7; kill -9 $pid; wait $pid
echo "killed during edits at: $(python3 -c "import json;print(json.load(open('runs/resume-b/checkpoint/state.json'))['loop']['done'])")"
# B: resume, kill during the final evaluation (state pending = 30)
$M --resume runs/resume-b > runs/resume-b2.log 2>&1 &
pid=$!
while ! python3 -c "import json,sys;sys.exit(0 if json.load(open('runs/resume-b/checkpoint/state.json'))['loop'].get('pending')==30 else 1)" 2>/dev/null; do sleep 1; done
sleep 5; kill -9 $pid; wait $pid
echo "killed during the T=30 evaluation"
$M --resume runs/resume-b > runs/resume-b3.log 2>&1
python3 - <<'PY'
import json
def fig(d):
    return {k: (fig(v) if isinstance(v, dict) else v) for k, v in d.items()
            if not k.startswith(("edit_seconds", "block_seconds", "seconds_per_edit", "peak_rss"))}
a = json.load(open("runs/resume-a/summary.json")); b = json.load(open("runs/resume-b/summary.json"))
print("same figures:", fig(a) == fig(b))
for k in ("T1", "T10", "T30"):
    print(k, a[k]["reliability"], a[k]["generalization"], a[k]["locality"], "|", b[k]["reliability"], b[k]["generalization"], b[k]["locality"])
PY
