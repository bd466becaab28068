"""The per-stage lines every pipeline benchmark prints (``bench_pipeline.py``, ``bench_increment.py``).

One place, so the figures in ``benchmarks/README.md`` read alike whichever benchmark made them."""

from __future__ import annotations


def print_stages(timings: dict, total_label: str | None = None, total: float | None = None) -> None:
    """``  stage   seconds   peak RSS`` per stage, then the total line when given."""
    for stage, t in timings.items():
        print(f"  {stage:<45} {t['seconds']:>8.1f} s   peak RSS {t['peak_rss_mib']:>7,} MiB")
    if total_label is not None:
        print(f"  {total_label:<45} {total:>8.1f} s")


def print_estimates(rows: list[dict], truth: dict) -> None:
    """Each question's estimate and interval beside the truth the fixtures built in."""
    for r in rows:
        print(f"  {r['question_id']:<24} estimate {r.get('estimate')} CI [{r.get('ci_low')}, {r.get('ci_high')}] "
              f"truth {truth.get(r['question_id'])}")
