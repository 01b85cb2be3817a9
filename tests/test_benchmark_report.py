"""The benchmark report's statistics: pairing runs, leaving out disturbed pairs, the ratio
as the median of the pairs' ratios and its interval. The benchmarks themselves run on demand
(python -m benchmarks); this checks only the arithmetic that turns their runs into a verdict."""

from __future__ import annotations

import math

import pytest

from benchmarks import report


def run(side: str, pair: int, rps: float, p99_ms: float = 10.0, foreign_cpu: float = 0.0):
    return {
        "config": "sync",
        "scenario": "health",
        "backend": "-",
        "side": side,
        "pair": pair,
        "rps": rps,
        "p50_ms": 5.0,
        "p99_ms": p99_ms,
        "errors": 0,
        "foreign_cpu": foreign_cpu,
    }


def rows_by_measure(samples: list[dict]) -> dict[str, dict]:
    results = report.summarise({}, samples, startup=[], bake=[])
    return {row["measure"]: row for row in results["rows"]}


def coverage(n: int, k: int) -> float:
    """P(k-th smallest <= median <= k-th largest) for n values from a continuous distribution."""
    below = sum(math.comb(n, i) for i in range(k)) / 2**n
    return 1 - 2 * below


@pytest.mark.parametrize("n", [6, 7, 10, 20, 30, 31, 60])
def test_median_interval_is_the_narrowest_order_statistics_covering_95_percent(n):
    values = [float(v) for v in range(n)]
    low, high = report.median_interval(values[::-1])  # order of the input does not matter
    k = int(low) + 1
    assert high == n - k  # symmetric: k-th smallest and k-th largest
    assert coverage(n, k) >= 0.95
    assert coverage(n, k + 1) < 0.95  # one rank narrower would cover less


def test_median_interval_of_30_values_is_the_10th_to_21st():
    assert report.median_interval([float(v) for v in range(1, 31)]) == (10.0, 21.0)


def test_too_few_values_have_no_interval():
    assert report.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None


def test_the_ratio_is_the_median_of_pair_ratios_not_the_ratio_of_medians():
    # Pair by pair the generated side keeps up except once; the medians alone (200 vs 150)
    # would put it at 0.75 because the slow pair happens to hold both middle values.
    samples = []
    for pair, (baseline, generated) in enumerate([(100, 100), (200, 150), (300, 300)]):
        samples += [run("baseline", pair, baseline), run("generated", pair, generated)]
    row = rows_by_measure(samples)["sync GET /health rps"]
    assert (row["generated"], row["baseline"]) == (150, 200)
    assert row["ratio"] == 1.0
    assert row["met"] is True


def test_a_slower_generated_side_misses_the_target():
    samples = []
    for pair in range(8):
        samples += [run("baseline", pair, 1000 + pair), run("generated", pair, 850 + pair)]
    rows = rows_by_measure(samples)
    assert rows["sync GET /health rps"]["met"] is False
    low, high = rows["sync GET /health rps"]["ratio_95"]
    assert low <= rows["sync GET /health rps"]["ratio"] <= high < 0.9


def test_p99_target_is_an_upper_bound():
    samples = []
    for pair in range(6):
        samples += [run("baseline", pair, 1000, p99_ms=10), run("generated", pair, 1000, 13)]
    row = rows_by_measure(samples)["sync GET /health p99"]
    assert row["ratio"] == pytest.approx(1.3)
    assert row["met"] is False


def test_disturbed_pairs_are_left_out_while_most_pairs_are_clean():
    samples = []
    for pair in range(4):
        samples += [run("baseline", pair, 1000), run("generated", pair, 1000)]
    # One pair ran while another process took a CPU: its generated run looks slow.
    samples += [run("baseline", 4, 1000), run("generated", 4, 100, foreign_cpu=1.0)]
    results = report.summarise({}, samples, startup=[], bake=[])
    assert results["summary"]["sync GET /health"]["pairs_used"] == 4
    assert results["summary"]["sync GET /health"]["pairs_run"] == 5
    assert results["rows"][0]["ratio"] == 1.0


def test_when_most_pairs_are_disturbed_all_are_kept():
    pairs = [
        {"baseline": run("baseline", i, 1000), "generated": run("generated", i, 900, 10, cpu)}
        for i, cpu in enumerate([1.0, 1.0, 0.0])
    ]
    assert report.clean_pairs(pairs) == pairs


def test_a_run_without_its_partner_forms_no_pair():
    samples = [run("baseline", 0, 1000), run("generated", 0, 990), run("baseline", 1, 1000)]
    pairs = report.pairs_of(samples)
    assert len(pairs) == 1
    assert pairs[0]["generated"]["rps"] == 990


def peer_run(side: str, pair: int, rps: float, p99_ms: float, scenario: str = "get"):
    return {**run(side, pair, rps, p99_ms), "peer": "drf", "scenario": scenario}


def test_peer_rows_compare_the_generated_service_with_each_peer():
    samples = []
    for pair, (peer, generated) in enumerate([(400, 1000), (500, 900), (450, 1100)]):
        samples += [peer_run("peer", pair, peer, 40.0), peer_run("generated", pair, generated, 20)]
    peers = {
        "peers": {"drf": "DRF"},
        "commands": {"generated": "gunicorn", "drf": "gunicorn config.wsgi"},
        "pairs": 3,
        "samples": samples,
        "worker_rss": [
            {"peer": "drf", "scenario": "get", "mib": {"generated": 90.0, "peer": 120.0}}
        ],
    }
    results = report.summarise({}, [], startup=[], bake=[], peers=peers)
    rows = {row["measure"]: row for row in results["rows"]}
    rps = rows["defaults vs DRF: GET /orders/<id> PostgreSQL rps"]
    assert (rps["generated"], rps["baseline"]) == (1000, 450)
    assert rps["ratio"] == pytest.approx(1100 / 450)  # of 2.5, 1.8, 2.44; not 1000 / 450
    assert rps["met"] is True  # generated >= 2 x the peer
    p99 = rows["defaults vs DRF: GET /orders/<id> PostgreSQL p99"]
    assert (p99["ratio"], p99["met"]) == (0.5, None)
    rss = rows["defaults vs DRF: GET /orders/<id> PostgreSQL worker RSS"]
    assert (rss["ratio"], rss["unit"]) == (0.75, "MiB")
    assert "| 90.0 MiB | 120.0 MiB | 0.75 |" in report.markdown_table([rss])
    assert not any(name.startswith("defaults vs DRF: POST") for name in rows)  # not run


def test_without_peers_there_are_no_peer_rows():
    samples = [run("baseline", 0, 1000), run("generated", 0, 990)]
    results = report.summarise({}, samples, startup=[], bake=[])
    assert all(not row["measure"].startswith("defaults vs") for row in results["rows"])
    assert results["peer_summary"] == {}


def test_a_configuration_not_shipped_is_reported_but_not_judged():
    # The same slow generated side: judged under a shipped configuration, only shown under
    # one that users do not get (the recycling row).
    samples = [
        run(side, i, rps) for i in range(6) for side, rps in (("generated", 50), ("baseline", 100))
    ]
    shipped = rows_by_measure(samples)["sync GET /health rps"]
    results = report.summarise({"unshipped_configs": ["sync"]}, samples, startup=[], bake=[])
    shown = {row["measure"]: row for row in results["rows"]}["sync GET /health rps"]
    assert shipped["met"] is False and shipped["ratio"] == 0.5
    assert shown["met"] is None and shown["target"] == "-" and shown["ratio"] == 0.5


@pytest.mark.parametrize(
    ("seconds_of", "linear"),
    [
        (lambda n: 0.9 + 0.003 * n, True),  # a start-up cost, then 3 ms per component
        (lambda n: 0.9 + 0.001 * n + 0.000004 * n * n, False),  # quadratic: 3.4 -> 7 ms
    ],
)
def test_bake_growth_is_judged_on_the_two_long_spans(seconds_of, linear: bool) -> None:
    bake = [
        {"components": size, "rep": rep, "seconds": seconds_of(size) + 0.01 * rep}
        for rep in range(3)
        for size in (1, 10, 100, 500, 1000)
    ]
    results = report.summarise({}, [], startup=[], bake=bake)
    (row,) = [row for row in results["rows"] if row["measure"].startswith("cookiecutter growth")]
    assert row["met"] is linear
    early, late = (
        results["bake_linearity"][key]
        for key in ("s_per_component_100_500", "s_per_component_500_1000")
    )
    assert early == pytest.approx((seconds_of(500) - seconds_of(100)) / 400)
    assert late == pytest.approx((seconds_of(1000) - seconds_of(500)) / 500)
