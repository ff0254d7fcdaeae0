"""One click per lesion, looked at two ways (docs/promptable.md, "Why the learned model lost").

``per-lesion``: every lesion component of the test split clicked alone (its interior point, one object) through
``PromptSession``: lesion volume, SUVmax, the model's Dice / predicted volume / FP outside every lesion, its zoom,
the 41 % isocontour's Dice and volume, and the model's Dice with the isocontour-informed first click (the 41 %
region containing the click as the previous-mask prompt). ``pool``: ``experiment interactive`` outputs of two
configurations x several seeds -> per case the mean over seeds, paired bootstrap vs the isocontour, and
configuration B - A paired by case and seed number. Synthetic data only.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/promptable_one_click.py per-lesion --data ds --model run
    PYTHONPATH=src python benchmarks/promptable_one_click.py pool --a exp_a_s0 exp_a_s1 --b exp_b_s0 exp_b_s1
"""
import argparse
import csv

import cc3d
import numpy as np

from petctfm.data import format as fmt
from petctfm.data.loader import list_cases
from petctfm.evaluate.bootstrap import paired_comparison
from petctfm.experiments.interactive import clicks as C
from petctfm.methods.promptable.session import PromptSession
from petctfm.train.checkpoint import load_model


def _dice(a: np.ndarray, t: np.ndarray) -> float:
    return float(2 * (a & t).sum() / max(a.sum() + t.sum(), 1))


def per_lesion(data: str, model: str, split: str = "test", max_zoom: float = 4.0) -> list[dict]:
    net, cfg = load_model(model)
    rows = []
    for cid in list_cases(data, split):
        case = fmt.load_case(data, cid, mmap=False)
        img, aff = np.asarray(case["image"], np.float32), np.asarray(case["meta"]["affine"], float)
        sp = np.sqrt((aff[:3, :3] ** 2).sum(0))
        ml = float(sp.prod()) / 1000
        les = np.asarray(case["label"]) > 0
        if not les.any():
            continue
        comps = cc3d.connected_components(les.astype(np.uint8), connectivity=18)
        s = PromptSession(net, cfg, (img[0], aff), ct=(img[1], aff), cache_size=64, max_zoom=max_zoom)
        half = np.maximum(np.rint(60 / 2 / sp), 1).astype(int)
        for p in C.component_points(les, 100):
            t = comps == comps[tuple(p)]
            s.clear()
            s.add_point(p, True, object=1)
            m, zoom = s.mask() > 0, s.objects[1].zoom
            iso = C.isocontour(img[0], p, half)
            s.clear()
            s.set_mask(C.isocontour(img[0], p, half, fallback=False), object=1)
            s.add_point(p, True, object=1)
            rows.append({"case": cid, "volume_ml": t.sum() * ml, "suv_max": float(img[0][t].max()),
                         "dice": _dice(m, t), "pred_ml": m.sum() * ml, "fp_non_lesion_ml": (m & ~les).sum() * ml,
                         "zoom": zoom, "iso_dice": _dice(iso, t), "iso_ml": iso.sum() * ml,
                         "isoprior_dice": _dice(s.mask() > 0, t)})
    return sorted(rows, key=lambda r: r["volume_ml"])


def _one(exp: str) -> dict:
    with open(f"{exp}/steps.csv", newline="") as f:
        return {(r["case_id"], r["arm"]): r for r in csv.DictReader(f) if r["protocol"] == "one_per_lesion"}


def pool(a: list[str], b: list[str], n_resamples: int = 2000) -> None:
    data = {"A": [_one(e) for e in a], "B": [_one(e) for e in b]}
    cases = sorted({c for c, arm in data["A"][0] if arm == "iso"})
    mean = lambda runs, arm, m: [float(np.mean([float(r[(c, arm)][m]) for r in runs])) for c in cases]  # noqa: E731
    first = data["A"][0][(cases[0], "iso")]
    for m in [m for m in ("dice", "fp_volume_ml", "fp_voxels_ml") if first.get(m) not in (None, "")]:
        iso = mean(data["A"][:1], "iso", m)
        print(f"{m}: isocontour {np.mean(iso):.3f} (n={len(cases)} cases)")
        for k, runs in data.items():
            for arm in ("model", "model_isoprior"):
                if (cases[0], arm) not in runs[0]:
                    continue
                c = paired_comparison(mean(runs, arm, m), iso, n_resamples)
                print(f"  {k} {arm:15s} {c['mean_a']:.3f}  - iso {c['mean_diff']:+.3f} "
                      f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]")
        n = min(len(a), len(b))
        c = paired_comparison([float(r[(c, "model")][m]) for r in data["B"][:n] for c in cases],
                              [float(r[(c, "model")][m]) for r in data["A"][:n] for c in cases], n_resamples)
        print(f"  B - A (model, paired by case and seed, n={c['n']}): {c['mean_diff']:+.3f} "
              f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("per-lesion")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--max-zoom", type=float, default=4.0)
    q = sub.add_parser("pool")
    q.add_argument("--a", nargs="+", required=True, help="experiment folders of configuration A (one per seed)")
    q.add_argument("--b", nargs="+", required=True, help="experiment folders of configuration B (one per seed)")
    args = ap.parse_args()
    if args.cmd == "pool":
        pool(args.a, args.b)
        return
    rows = per_lesion(args.data, args.model, args.split, args.max_zoom)
    print(" ".join(f"{k:>9s}" for k in rows[0]) if rows else "no lesions")
    for r in rows:
        print(" ".join(f"{v:>9.3f}" if isinstance(v, float) else f"{str(v)[-9:]:>9s}" for v in r.values()))
    for k in ("dice", "iso_dice", "isoprior_dice"):
        print(f"mean {k}: {np.mean([r[k] for r in rows]):.3f} (n={len(rows)} lesions)")


if __name__ == "__main__":
    main()
