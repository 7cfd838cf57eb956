set -e
# The age audit of docs/evaluation.md: a tiny synthetic corpus, made-up ages, a 200-step
# tiny model. Run in an empty folder (about a minute on two busy cores).
A="arw-sv"
$A synth --preset tiny --out corpus --quiet test_speakers_per_cell=8
$A manifest corpus --meta corpus/vox1_meta.csv --splits dev --out train.csv
python - <<'PY'
import csv, random
random.seed(0)
rows = list(csv.DictReader(open("corpus/vox1_meta.csv"), delimiter="\t"))
spk = [r["VoxCeleb1 ID"] for r in rows if r["Set"] == "test"]
bands = [(6, 12), (13, 17), (18, 59), (60, 90)]
with open("ages.csv", "w") as f:
    f.write("speaker,age\n")
    for i, s in enumerate(spk):
        lo, hi = bands[i % 4]
        f.write(f"{s},{random.randint(lo, hi)}\n")
PY
$A manifest corpus --meta corpus/vox1_meta.csv --splits test --speakers ages.csv --out test.csv
$A train tiny data.train_manifest=train.csv train.out_dir=run train.steps=200 --quiet
$A embed run/checkpoints/step_200.pt --manifest test.csv --out emb.npz --quiet
$A trials test.csv --out trials.txt --targets 12 --within 30 --across 30
$A eval --embeddings emb.npz --trials trials.txt --meta test.csv --bins age=0,13,18,60,200 \
    --group-by age_band --group-by gender,age_band --min-speakers 3 --bootstrap 200 --out eval
