"""bench/ingest_bound.py: the most `ingest` can reach against eximstats, from its parts' CPU (pure)."""

import pytest

from bench import ingest_bound


def _samples(insert: float) -> dict[str, list[float]]:
    return {
        "join": [1.8, 2.0, 1.9, 2.2],
        "encode": [0.7, 0.9, 0.8, 0.8],
        "open": [0.6, 0.6, 0.7, 0.5],
        "insert": [insert, insert + 1.0],
        "insert_bare": [1.0, 1.2],
    }


def test_the_bound_is_eximstats_seconds_times_cores_over_the_parts_cpu():
    b = ingest_bound.bound(_samples(6.5), eximstats_seconds=1.5, cores=2)
    # medians: join 1.95, encode 0.8, open 0.6, insert 7.0, insert_bare 1.1
    assert b["budget_cpu_s"] == pytest.approx(3.0)
    assert b["total_cpu_s"] == pytest.approx(1.95 + 0.8 + 0.6 + 7.0)
    assert b["ratio_bound"] == pytest.approx(3.0 / 10.35)
    assert b["ratio_bound_bare"] == pytest.approx(3.0 / 4.45)
    assert b["cpu_s"]["insert"]["runs"] == 2 and b["cpu_s"]["join"]["min"] == 1.8
    # more cores, or a cheaper store, raise the bound; a store as cheap as none at all reaches the bare one
    assert ingest_bound.bound(_samples(6.5), 1.5, 4)["ratio_bound"] == pytest.approx(2 * b["ratio_bound"])
    assert ingest_bound.bound(_samples(0.6), 1.5, 2)["ratio_bound"] == pytest.approx(b["ratio_bound_bare"])


def test_a_part_left_out_is_an_error_not_a_higher_bound():
    samples = _samples(6.5)
    del samples["insert"]
    with pytest.raises(KeyError):
        ingest_bound.bound(samples, 1.5, 2)


def test_the_report_says_the_parts_and_the_bound():
    said = ingest_bound.describe(ingest_bound.bound(_samples(6.5), 1.5, 2))
    assert "parse + join 1.95" in said and "**7.00**" in said and "with no view at all: 1.10" in said
    assert "2 cores have 3.00 CPU-s in eximstats' 1.50 s" in said
    assert "cannot pass **0.29×**" in said and "without access paths: 0.67×" in said
