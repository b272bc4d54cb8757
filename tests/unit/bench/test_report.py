"""BENCHMARKS.md rendered from a results.json (no servers, no plots)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.cassandra_ops import delta
from bench.report import render, spread_cell
from bench.stats import lateness_summary, median_summaries, spread

pytestmark = pytest.mark.unit


def results(mode: str = "quick") -> dict[str, Any]:
    totals = {"planned": 500, "delivered": 500, "lost": 0, "duplicates": 0, "early": 0}
    return {
        "meta": {
            "mode": mode,
            "command": "make bench BENCH_ARGS=--quick",
            "started": "2026-11-27 04:00 UTC",
            "duration_s": 240,
            "note": "",
            "machine": {
                "cores": 2,
                "cpu_model": "Test CPU",
                "memory_gib": 8.0,
                "kernel": "6.1",
                "load_average_at_start": [0.5, 0.4, 0.3],
                "python": "3.11.7",
                "kafka": "4.1.1",
                "cassandra": "5.0.8",
                "packages": {"confluent-kafka": "2.16.1"},
                "commit": "abc1234",
            },
            "settings": {"lookahead_ms": 4000},
            "profile": {"rates": [100, 1000]},
        },
        "ingest": {
            "http_single": {
                "acked_per_s": spread([900.0, 1000.0, 1100.0]),
                "stored_per_s": spread([800.0]),
                "request_p50_ms": spread([10.0, 12.0, 11.0]),
                "request_p99_ms": spread([40.0, 50.0, 45.0]),
                "failures": 0,
            }
        },
        "steady": [
            {
                "destination": "kafka",
                "rate": 100,
                "seconds": 5,
                "runs": 3,
                "achieved_rate": spread([100.0, 99.0, 100.0]),
                "lateness_ms": median_summaries(
                    [lateness_summary([5, 7, 9]), lateness_summary([6, 8, 10])]
                ),
                "totals": totals,
            },
            {
                "destination": "rest",
                "rate": 1000,
                "seconds": 5,
                "runs": 1,
                "achieved_rate": spread([400.0]),
                "lateness_ms": median_summaries([lateness_summary([1, 2, 3])]),
                "totals": {**totals, "lost": 2},
            },
        ],
        "recovery": [
            {
                "service": "dispatcher",
                "rate": 200,
                "seconds": 30,
                "killed_after_s": 10.2,
                "back_to_steady_s": 3.0,
                "lateness_ms": lateness_summary([10, 2_500]),
                "totals": totals,
            }
        ],
        "resources": {
            "steady kafka 100/s": {
                "wall_s": 20.0,
                "processes": {"dispatcher": {"cpu_s": 1.5, "cores": 0.1, "peak_rss_mib": 80.0}},
            }
        },
        "errors": ["hotspot 5000: timed out after 100 s"],
    }


def test_a_quick_run_is_labelled_a_sample_with_its_command_machine_and_versions() -> None:
    text = render(results())
    assert text.startswith("# Benchmarks\n")
    assert "quick-mode sample" in text
    assert "`make bench BENCH_ARGS=--quick`" in text
    assert "2 cores (Test CPU), 8.0 GiB memory" in text
    assert "Kafka 4.1.1" in text and "Cassandra 5.0.8" in text and "Python 3.11.7" in text
    assert "- `lookahead_ms` = `4000`" in text


def test_the_header_gives_the_machines_speed_and_older_results_still_render() -> None:
    timed = results()
    timed["meta"]["machine"]["calibration_s"] = 1.37
    assert "a plain Python loop of 10 M additions takes 1.37 s here" in render(timed)
    assert "- Speed: not measured" in render(results())  # a results.json from before the loop


def test_a_full_run_is_not_labelled_a_sample() -> None:
    assert "-mode sample" not in render(results("full"))


def test_figures_are_medians_with_min_max_of_the_runs() -> None:
    text = render(results())
    assert "| HTTP POST /messages (32 connections) | 1,000 (900-1,100) | 800 |" in text
    # p50 of the runs 7 and 8: median 7.5, shown rounded
    assert "| kafka 100/s (achieved 100 (99-100)) | 8 (7-8) |" in text
    assert "missing 2" in text


def test_a_rate_not_sustained_and_rates_not_run_are_said() -> None:
    text = render(results())
    assert "Not run at 5,000/s in this mode." in text
    assert "rest 1,000/s: the load generator reached only 400/s" in text


def test_a_hotspot_not_all_delivered_says_so() -> None:
    hot = {
        "messages": 1_000,
        "lead_s": 15.0,
        "wait_s": 61.0,
        "scheduled_in_s": 0.5,
        "stored_before_due": True,
        "last_delivered_after_s": 60.9,
        "lateness_ms": lateness_summary([10, 20]),
        "totals": {"planned": 1_000, "delivered": 990, "lost": 10, "duplicates": 0, "early": 0},
    }
    text = render({**results(), "hotspot": hot})
    assert "**Not all delivered** within the 61 s waited" in text
    assert "990/1,000, missing 10" in text
    hot["totals"] = {**hot["totals"], "delivered": 1_000, "lost": 0}
    assert "- Last delivered 60.90 s after the due second began" in render(
        {**results(), "hotspot": hot}
    )


def test_a_pending_load_with_refusals_or_cut_by_the_deadline_says_so() -> None:
    """A refused request moves the bucketer's offsets as a stored one does: the section must not
    count refusals as pending messages (the suite once loaded into an app's pending cap)."""
    run = {
        "target": 1_000_000,
        "loaded": 820_000,
        "refused": 180_000,
        "complete": False,
        "load_s": 459.5,
        "stored_per_s_first_tenth": 1_868,
        "stored_per_s_last_tenth": 967,
        "stored_per_s_overall": 2_176,
        "bytes_per_message": 228,
        "steady_rate": 1_000,
        "steady_achieved_rate": 999,
        "lateness_ms": lateness_summary([5, 9]),
        "totals": {"planned": 10, "delivered": 10, "lost": 0, "duplicates": 0, "early": 0},
    }
    text = render({**results(), "pending": [run]})
    assert "| 820,000 (of 1,000,000: 180,000 refused, see the rejected topic) |" in text
    cut = {**run, "refused": 0}
    assert "820,000 (of 1,000,000: the load stopped at the suite's deadline)" in render(
        {**results(), "pending": [cut]}
    )
    whole = {**run, "loaded": 1_000_000, "refused": 0, "complete": True}
    assert "| 1,000,000 | 1,868 → 967 (overall" in render({**results(), "pending": [whole]})
    # the load generator competes for the cores while it writes: the rate after it is shown too
    fed = {**whole, "fed_s": 600.2, "stored_per_s_first_tenth_alone": 3_650}
    assert (
        "| 1,000,000 | 1,868 → 967; 3,650 → 967 once the load generator had written all"
        " (after 600.2 s) (overall 2,176, 459.5 s) |"
    ) in render({**results(), "pending": [fed]})


def test_the_steady_runs_with_the_pending_load_are_medians_after_its_compactions() -> None:
    one = lateness_summary([5, 9, 100])
    runs = {
        "target": 1_000,
        "loaded": 1_000,
        "refused": 0,
        "complete": True,
        "load_s": 1.0,
        "stored_per_s_first_tenth": 1_000,
        "stored_per_s_last_tenth": 1_000,
        "stored_per_s_overall": 1_000,
        "bytes_per_message": 250,
        "compactions_s": 42.0,
        "steady_rate": 1_000,
        "steady_runs": 3,
        "steady_achieved_rate": spread([999.0]),
        "lateness_ms": median_summaries([one, lateness_summary([6, 8, 50]), one]),
        "totals": {"planned": 30, "delivered": 30, "lost": 0, "duplicates": 0, "early": 0},
    }
    text = render({**results(), "pending": [runs]})
    assert "| 1,000/s, 3 runs (after 42 s of compactions) | 9 (8-9) | 100 (50-100) |" in text


def test_the_hotspot_with_production_horizons_has_its_own_part_and_cost_row() -> None:
    def hot(delivered: int, last_s: float) -> dict[str, Any]:
        return {
            "messages": 1_000,
            "lead_s": 65.0,
            "wait_s": 61.0,
            "scheduled_in_s": 0.5,
            "stored_before_due": True,
            "last_delivered_after_s": last_s,
            "lateness_ms": lateness_summary([10, 20]),
            "totals": {
                "planned": 1_000,
                "delivered": delivered,
                "lost": 1_000 - delivered,
                "duplicates": 0,
                "early": 0,
            },
        }

    r = {
        **results(),
        "hotspot": hot(1_000, 9.5),
        "hotspot_production": {**hot(1_000, 1.25), "dispatchers": 2},
    }
    process = {"cpu_s": 1.0, "cores": 0.1, "peak_rss_mib": 90.0}
    r["resources"]["hotspot 1000 (production horizons)"] = {
        "wall_s": 30.0,
        "processes": {
            "dispatcher": process,
            "dispatcher-1": process,
            "dispatcher-1/resource-tracker": process,  # multiprocessing's helper: not counted
        },
    }
    text = render(r)
    shrunk, production = text.split("### Shrunk horizons")[1].split("### Production horizons")
    assert "- Last delivered 9.50 s after the due second began" in shrunk
    assert "- Last delivered 1.25 s after the due second began" in production
    assert "60 s buckets, 5 min look-ahead" in production
    assert "The dispatcher runs as 2 instances" in production
    assert "due 65 s ahead, within the look-ahead" in production
    assert "the dispatcher's firing of 1,000 held messages" in production
    far = {**r["hotspot_production"], "lead_s": 515.0, "messages": 1_000_000}
    stored = render({**r, "hotspot_production": far}).split("### Production horizons")[1]
    assert "due 515 s ahead, beyond the look-ahead" in stored
    assert "the release and the dispatcher's firing of 1,000,000 messages" in stored
    assert "runs as" not in shrunk
    assert "![hotspot_production](docs/bench/hotspot_production.png)" in production
    assert "| Phase | dispatcher | dispatcher-1 | all |" in text
    assert (
        "| hotspot 1000 (production horizons) (1,000 delivered in 30.0 s) | 1.00 | 1.00 | 2.00 |"
        in text
    )


def test_the_saturation_rate_is_in_the_header_and_has_its_table() -> None:
    def tried(rate: int, held: bool, why: str = "") -> dict[str, Any]:
        return {
            "rate": rate,
            "achieved_rate": float(rate),
            "held": held,
            "why_not": why,
            "lateness_ms": lateness_summary([10, 20]),
            "totals": {"planned": 10, "delivered": 10, "lost": 0, "duplicates": 0, "early": 0},
        }

    sat = {
        "destination": "kafka",
        "seconds": 60,
        "tail_s": 10.0,
        "behind_ms": 1_000,
        "held_rate": 1_500,
        "tried": [tried(1_000, True), tried(1_500, True), tried(2_000, False, "p99 ... 4,000 ms")],
    }
    text = render({**results(), "saturation": sat})
    assert "- Saturation rate (the highest rate held for a minute without falling behind):" in text
    assert '1,500/s to the Kafka destination (section 2, "Saturation rate")' in text
    assert "| 2,000/s (achieved 2,000) |" in text
    assert "| no: p99 ... 4,000 ms |" in text
    every = {**sat, "held_rate": 2_000, "tried": [tried(1_000, True), tried(2_000, True)]}
    assert "at least 2,000/s (every rate tried, up to 2,000/s, was held)" in render(
        {**results(), "saturation": every}
    )
    none = {**sat, "held_rate": None, "tried": [tried(1_000, False, "x")]}
    assert "below 1,000/s (the lowest rate tried was not held)" in render(
        {**results(), "saturation": none}
    )
    assert "not measured in this run" in render(results())


def test_recovery_resources_and_problems_have_their_sections() -> None:
    text = render(results())
    assert "| dispatcher | 200/s for 30 s | 10.2 s | 3 | 2,500 | 0 | 0 |" in text
    assert "| steady kafka 100/s (20.0 s) | 1.5 s / 80 |" in text
    assert "## Problems in this run" in text
    assert "- hotspot 5000: timed out after 100 s" in text


def test_cpu_per_delivered_message_counts_the_pipeline_not_the_load_generator() -> None:
    r = results()
    r["resources"]["steady kafka 100/s"]["processes"].update(
        {
            "kafka": {"cpu_s": 3.0, "cores": 0.2, "peak_rss_mib": 600.0},
            "feeder": {"cpu_s": 9.0, "cores": 0.5, "peak_rss_mib": 100.0},
        }
    )
    text = render(r)
    # totals: 500 delivered; dispatcher 1.5 s and kafka 3.0 s -> 3.00 and 6.00 ms, 9.00 in all
    assert "| Phase | dispatcher | kafka | all |" in text
    assert "| steady kafka 100/s (500 delivered in 20.0 s) | 3.00 | 6.00 | 9.00 |" in text
    # a phase without a resources sample (rest 1000/s here) has no row
    assert "steady rest 1000/s (" not in text


def test_cpu_at_a_steady_rate_comes_from_the_saturation_runs_steady_windows() -> None:
    r = results()
    r["resources"]["saturation kafka"] = {"wall_s": 200.0, "processes": {}}
    window = {"seconds": 50.0, "messages": 50_000, "cpu_s": {"kafka": 5.0, "feeder": 9.0}}
    r["saturation"] = {
        "destination": "kafka",
        "seconds": 60,
        "tail_s": 10.0,
        "behind_ms": 1_000,
        "held_rate": 1_000,
        "tried": [
            {
                "rate": 1_000,
                "achieved_rate": 1_000.0,
                "held": True,
                "why_not": "",
                "lateness_ms": lateness_summary([10, 20]),
                "totals": {"planned": 10, "delivered": 10, "lost": 0, "duplicates": 0, "early": 0},
                "cpu_window": window,
            }
        ],
    }
    text = render(r)
    assert "| Rate | kafka | all | % of a core |" in text  # not the load generator
    assert "| 1,000/s (50,000 messages in 50 s) | 0.100 | 0.100 | 10 |" in text


def test_cassandra_operations_per_delivered_message() -> None:
    r = results()
    r["cassandra_ops"] = {
        "steady kafka 100/s": {
            "messages": {"writes": 1000, "reads": 500},
            "message_log": {"writes": 1500},
            "buckets": {"scans": 5},
        }
    }
    text = render(r)
    # 500 delivered: 2,500 writes -> 5.00; 505 reads and scans -> 1.01
    assert (
        "| steady kafka 100/s (500 delivered) | 5.00 | 1.01 | message_log 3.00, messages 2.00 |"
        in text
    )
    assert "### Cassandra operations" not in render(results())  # a run from before the counts


def test_cassandra_counts_are_differences_of_two_snapshots() -> None:
    before = {"messages": {"writes": 10, "reads": 4}}
    after = {"messages": {"writes": 25, "reads": 4}, "buckets": {"writes": 3}}
    assert delta(before, after) == {"messages": {"writes": 15}, "buckets": {"writes": 3}}


def test_the_idle_cost_is_percent_of_a_core_with_the_brokers_share_from_the_services() -> None:
    r = results()

    def use(cores: float) -> dict[str, float]:
        return {"cpu_s": cores * 30, "cores": cores, "peak_rss_mib": 100.0}

    r["resources"]["idle: the stack alone"] = {
        "wall_s": 30.0,
        "processes": {"kafka": use(0.02), "cassandra": use(0.05)},
    }
    r["resources"]["idle: the services up"] = {
        "wall_s": 30.0,
        "processes": {
            "kafka": use(0.34),
            "cassandra": use(0.06),
            "dispatcher": use(0.18),
            "ingest": use(0.01),
            "feeder": use(0.5),  # not a service
        },
    }
    text = render(r)
    assert "The services together: 19.0 % of a core." in text
    assert "The broker's load from the services: 32.0 % of a core." in text
    assert "| dispatcher | 18.0 | - |" in text and "| kafka | 34.0 | 2.0 |" in text
    assert "## 0. Idle cost" not in render(results())


def test_spread_cell() -> None:
    assert spread_cell({"runs": 0}) == "n/a"
    assert spread_cell(None) == "n/a"
    assert spread_cell({"median": 2.5, "min": 1.0, "max": 4.0, "runs": 3}, 1) == "2.5 (1.0-4.0)"
    assert spread_cell({"median": 2.0, "min": 2.0, "max": 2.0, "runs": 1}) == "2"
