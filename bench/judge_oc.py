"""Operating characteristics of the canary judge, by seeded simulation.

    .venv/bin/python bench/judge_oc.py [--trials 500] [--svg docs/judge_oc.svg]

For each true effect from -10 % to +50 % (canary losses that many percent above stable's,
the skewed "absolute error" losses of tests/judge_sim.py), ``--trials`` canaries at 20 %
traffic are judged after every batch of 20 outcomes up to 5 000, with the default
:class:`JudgeSpec` (alpha 0.01, min_effect 0.10). A trial ends at its first WORSE (a
rollback ends a canary) and goes on after a NOT_WORSE (only a recommendation). Prints
markdown tables of P(WORSE by n outcomes) and P(NOT_WORSE by n outcomes) for n = 200,
500, 1 000, 2 000, 5 000, the median outcomes to a decision, and what a fixed-sample
test looked at after every batch would have done; writes the two probability curves as
a plain SVG line chart (no plotting library). About a minute at 500 trials.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from xml.sax.saxutils import escape

import benchlib as bl
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(bl.ROOT))  # the tests' simulator

from server.monitoring.judge import JudgeSpec, Outcome
from tests.judge_sim import Trials, simulate, skewed_errors

BUDGETS = (200, 500, 1_000, 2_000, 5_000)
EFFECTS = tuple(round(-0.10 + 0.05 * i, 2) for i in range(13))  # -10 % .. +50 %
TABLE_EFFECTS = (-0.10, 0.0, 0.10, 0.20, 0.30, 0.40, 0.50)
COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e")
SEED = 20


def worse_at(trials: Trials) -> npt.NDArray[np.int64]:
    return trials.first_worse


def not_worse_at(trials: Trials) -> npt.NDArray[np.int64]:
    return trials.first_not_worse


def by(first: npt.NDArray[np.int64], budget: int) -> float:
    """Share of trials decided (first time > 0) within ``budget`` outcomes."""
    return float(np.mean((first > 0) & (first <= budget)))


def peeking_false_rate(seed: int, trials: int, alpha_z: float = 2.326) -> float:
    """A fixed-sample one-sided Welch z-test at 1 % (unpaired), looked at after every batch
    of 20 outcomes once each side has 50: the share of identical canaries ever 'worse'."""
    rng = np.random.default_rng(seed)
    n_batches = 250
    losses = skewed_errors(rng, (trials, n_batches, 20))
    canary = rng.random(losses.shape) < 0.2

    def cumulative(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = np.cumsum(mask.sum(axis=2), axis=1)
        s = np.cumsum(np.where(mask, losses, 0.0).sum(axis=2), axis=1)
        q = np.cumsum(np.where(mask, losses * losses, 0.0).sum(axis=2), axis=1)
        return n, s, q

    nc, sc, qc = cumulative(canary)
    ns, ss, qs = cumulative(~canary)
    with np.errstate(invalid="ignore", divide="ignore"):
        mc, ms = sc / nc, ss / ns
        vc, vs = (qc - sc * mc) / (nc - 1), (qs - ss * ms) / (ns - 1)
        z = (mc - ms) / np.sqrt(vc / nc + vs / ns)
    looked = (nc >= 50) & (ns >= 50)
    return float(np.mean(np.any(looked & (z > alpha_z), axis=1)))


def svg_chart(results: dict[float, Trials], spec: JudgeSpec, trials: int) -> str:
    """Two panels: P(WORSE by n) and P(NOT_WORSE by n) against the true effect."""
    width, height = 980, 470
    left, top, pw, ph, gap = 70, 50, 380, 300, 110
    x_lo, x_hi = EFFECTS[0], EFFECTS[-1]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>']

    def text(x: float, y: float, s: str, anchor: str = "middle", extra: str = "") -> None:
        out.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>'
                   f'{escape(s)}</text>')

    panels = (("Rolled back (WORSE) within n outcomes", worse_at),
              ("Promotion advised (NOT_WORSE) within n outcomes", not_worse_at))
    for i, (title, first_of) in enumerate(panels):
        x0 = left + i * (pw + gap)

        def px(effect: float, x0: float = x0) -> float:
            return x0 + (effect - x_lo) / (x_hi - x_lo) * pw

        def py(p: float) -> float:
            return top + (1.0 - p) * ph

        text(x0 + pw / 2, top - 18, title, extra=' font-weight="bold" font-size="13"')
        for p in (0.0, 0.25, 0.5, 0.75, 1.0):  # y grid and ticks
            out.append(f'<line x1="{x0}" y1="{py(p):.1f}" x2="{x0 + pw}" y2="{py(p):.1f}" '
                       f'stroke="#ddd"/>')
            text(x0 - 8, py(p) + 4, f"{p:.2f}", anchor="end")
        for e in (-0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5):  # x ticks
            out.append(f'<line x1="{px(e):.1f}" y1="{top + ph}" x2="{px(e):.1f}" '
                       f'y2="{top + ph + 5}" stroke="black"/>')
            text(px(e), top + ph + 18, f"{e:+.0%}" if e else "0")
        for j, (marker, label) in enumerate(((0.0, "no effect"),
                                             (spec.min_effect, "min_effect"))):
            out.append(f'<line x1="{px(marker):.1f}" y1="{top}" x2="{px(marker):.1f}" '
                       f'y2="{top + ph}" stroke="#888" stroke-dasharray="4 3"/>')
            text(px(marker) + 3, top + 14 + 14 * j, label, anchor="start",
                 extra=' fill="#666"')
        out.append(f'<rect x="{x0}" y="{top}" width="{pw}" height="{ph}" fill="none" '
                   f'stroke="black"/>')
        text(x0 + pw / 2, top + ph + 38, "true effect: canary mean loss / stable's - 1")
        text(x0 - 48, top + ph / 2, "probability",
             extra=f' transform="rotate(-90 {x0 - 48} {top + ph / 2})"')
        for colour, budget in zip(COLOURS, BUDGETS, strict=True):
            xy = [(px(e), py(by(first_of(results[e]), budget))) for e in EFFECTS]
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                       f'stroke-width="2"/>')
            out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>'
                       for x, y in xy)
    legend_y = height - 44
    text(left, legend_y, "n outcomes (20 % canary):", anchor="start")
    for j, (colour, budget) in enumerate(zip(COLOURS, BUDGETS, strict=True)):
        x = left + 190 + j * 110
        out.append(f'<line x1="{x}" y1="{legend_y - 4}" x2="{x + 24}" y2="{legend_y - 4}" '
                   f'stroke="{colour}" stroke-width="3"/>')
        text(x + 30, legend_y, f"{budget:,}", anchor="start")
    text(left, height - 14, f"alpha {spec.alpha}, min_effect {spec.min_effect}, "
         f"{trials} trials per point, batches of 20 judged after each, seed {SEED}; "
         "bench/judge_oc.py", anchor="start", extra=' fill="#666"')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--svg", type=Path, default=bl.ROOT / "docs" / "judge_oc.svg")
    args = parser.parse_args()
    spec = JudgeSpec()
    started = time.monotonic()
    results: dict[float, Trials] = {}
    for k, effect in enumerate(EFFECTS):
        results[effect] = simulate(spec, seed=SEED + k, trials=args.trials, effect=effect,
                                   stop_on=(Outcome.WORSE,))
    head = "| true effect | " + " | ".join(f"n = {n:,}" for n in BUDGETS) + " |"
    rule = "|---:|" + "---:|" * len(BUDGETS)
    for name, first_of in (("P(WORSE within n outcomes)", worse_at),
                           ("P(NOT_WORSE within n outcomes)", not_worse_at)):
        print(f"\n{name}\n\n{head}\n{rule}")
        for effect in TABLE_EFFECTS:
            cells = " | ".join(f"{by(first_of(results[effect]), n):.3f}" for n in BUDGETS)
            print(f"| {effect:+.0%} | {cells} |")
    print("\n| true effect | WORSE within 5 000 | median outcomes to WORSE "
          "| NOT_WORSE within 5 000 | median outcomes to NOT_WORSE |\n|---:|---:|---:|---:|---:|")
    for effect in TABLE_EFFECTS:
        t = results[effect]
        print(f"| {effect:+.0%} | {t.worse:.3f} | {t.median_to_worse():.0f} | "
              f"{t.not_worse:.3f} | {t.median_to_not_worse():.0f} |")
    peek = peeking_false_rate(SEED - 1, args.trials)
    print(f"\nfixed-sample z-test at 1 %, looked at after every batch: identical canaries "
          f"ever 'worse' {peek:.3f} (the judge: {results[0.0].worse:.3f})")
    args.svg.write_text(svg_chart(results, spec, args.trials))
    print(f"\nwrote {args.svg} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
