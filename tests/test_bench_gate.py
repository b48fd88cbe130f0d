"""The ratio gate of ``make bench`` (``benchmarks/gate.py``, ``run.py --record/--no-record``)
on synthetic results: per-round ratios, pass, fail beyond the noise, within the noise, a
missing peer, a first run without a record. No timing: every value is made up."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import gate  # noqa: E402
import harness  # noqa: E402
import run  # noqa: E402

TASKS = "tiny_tasks_per_s"  # higher is better
SYNC = "sync_round_trip_us"  # lower is better
MACHINE = {"cores": 2, "usable_cores": 2, "load": [1.0, 1.5], "date": "d", "commit": "c"}


def results(
    values: dict[str, dict[str, list[float | None]]], skipped: dict[str, str] | None = None
) -> harness.Results:
    """Results where ``values[contender][metric][i]`` is round i+1's value (None: an error)."""
    names = list(values)
    made = harness.Results(
        names, 3, {n: {m: harness.Cell() for m in harness.METRICS} for n in names}
    )
    for name, metrics in values.items():
        for metric, per_round in metrics.items():
            cell = made.cells[name][metric]
            for run_index, value in enumerate(per_round, start=1):
                if value is None:
                    cell.errors.append("RuntimeError: boom")
                else:
                    cell.values.append(value)
                    cell.rounds.append(run_index)
    made.skipped.update(skipped or {})
    return made


def measured(values: dict[str, dict[str, list[float | None]]], **kwargs: object) -> gate.Measured:
    return gate.measure(results(values, **kwargs), dict(MACHINE))  # type: ignore[arg-type]


def record_of(ratios: dict[str, dict[str, list[float]]], cores: int = 2) -> dict:
    """A record whose ``ratios[figure][peer]`` were these per-round ratios."""
    return {
        "machine": {**MACHINE, "cores": cores},
        "repeats": 3,
        "ratios": {
            figure: {peer: gate.Ratio.of(rounds).to_json() for peer, rounds in peers.items()}
            for figure, peers in ratios.items()
        },
    }


def verdict(verdicts: list[gate.Verdict], figure: str, peer: str) -> gate.Verdict:
    (found,) = [v for v in verdicts if (v.figure, v.peer) == (figure, peer)]
    return found


def test_ratios_pair_round_i_with_round_i() -> None:
    run_ = measured(
        {
            "raylite": {TASKS: [100.0, 200.0, 300.0], SYNC: [100.0, 100.0, 400.0]},
            "multiprocessing": {TASKS: [50.0, 200.0, 100.0], SYNC: [300.0, 150.0, 400.0]},
        }
    )
    # rates: raylite / peer per round -> 2, 1, 3
    assert run_.ratios[(TASKS, "multiprocessing")] == gate.Ratio.of([2.0, 1.0, 3.0])
    # times: peer / raylite per round -> 3, 1.5, 1
    assert run_.ratios[(SYNC, "multiprocessing")] == gate.Ratio.of([3.0, 1.5, 1.0])
    tasks = run_.ratios[(TASKS, "multiprocessing")]
    assert (tasks.median, tasks.low, tasks.high, tasks.rounds) == (2.0, 1.0, 3.0, 3)
    assert tasks.spread == 0.5  # half the interquartile range, 1.5 to 2.5


def test_one_wild_round_does_not_widen_the_spread() -> None:
    ratio = gate.Ratio.of([1.0, 1.0, 1.0, 1.0, 9.0])
    assert ratio.spread == 0.0
    assert str(ratio) == "1x [1-9]"  # the table still shows it
    assert gate.Ratio.of([2.0]).spread == 0.0  # one round: no spread measured


def test_a_round_one_side_failed_is_left_out() -> None:
    run_ = measured(
        {
            "raylite": {TASKS: [100.0, None, 300.0]},
            "multiprocessing": {TASKS: [50.0, 10.0, 100.0]},
        }
    )
    assert run_.ratios[(TASKS, "multiprocessing")] == gate.Ratio.of([2.0, 3.0])


def test_first_run_without_a_record_is_new_and_recorded() -> None:
    run_ = measured({"raylite": {TASKS: [100.0]}, "multiprocessing": {TASKS: [50.0]}})
    verdicts = gate.judge(run_, None)
    assert [(v.figure, v.peer, v.status) for v in verdicts] == [(TASKS, "multiprocessing", "new")]
    assert gate.decide_record(None, None, run_, verdicts)[0]
    record = gate.updated(None, run_)
    assert record["ratios"] == {
        TASKS: {
            "multiprocessing": {
                "median": 2.0,
                "q1": 2.0,
                "q3": 2.0,
                "min": 2.0,
                "max": 2.0,
                "rounds": 1,
            }
        }
    }
    assert record["machine"] == MACHINE


def test_a_ratio_like_the_record_passes() -> None:
    run_ = measured(
        {"raylite": {TASKS: [190.0, 200.0, 210.0]}, "multiprocessing": {TASKS: [100.0] * 3}}
    )
    record = record_of({TASKS: {"multiprocessing": [1.9, 2.0, 2.1]}})
    verdicts = gate.judge(run_, record)
    assert verdict(verdicts, TASKS, "multiprocessing").status == "pass"
    assert gate.failures(verdicts) == []
    assert gate.decide_record(None, record, run_, verdicts)[0]


def test_a_drop_beyond_the_noise_fails_and_keeps_the_record() -> None:
    # now 1.5 (quartiles 1.45, 1.55: spread 0.05) vs recorded 2.0 (quartiles 1.8, 2.2:
    # spread 0.2): noise 2 * 0.2 = 0.4 < drop 0.5
    run_ = measured(
        {"raylite": {TASKS: [140.0, 150.0, 160.0]}, "multiprocessing": {TASKS: [100.0] * 3}}
    )
    record = record_of({TASKS: {"multiprocessing": [1.6, 2.0, 2.4]}})
    verdicts = gate.judge(run_, record)
    failed = verdict(verdicts, TASKS, "multiprocessing")
    assert failed.status == "fail"
    assert failed.noise == pytest.approx(0.4)
    report = gate.format_gate(verdicts, record)
    assert f"FAILED {TASKS} vs multiprocessing: 1.5x [1.4-1.6] now, recorded 2x [1.6-2.4]" in report
    assert "noise 0.4" in report
    write, why = gate.decide_record(None, record, run_, verdicts)
    assert not write and "gate failed" in why
    assert not gate.decide_record(False, record, run_, verdicts)[0]
    assert gate.decide_record(True, record, run_, verdicts)[0]  # --record accepts the change


def test_a_drop_within_the_noise_passes() -> None:
    # now 1.8 (quartiles 1.7, 1.9: spread 0.1) vs recorded 2.0 (spread 0.2): drop 0.2 < 0.4
    run_ = measured(
        {"raylite": {TASKS: [160.0, 180.0, 200.0]}, "multiprocessing": {TASKS: [100.0] * 3}}
    )
    record = record_of({TASKS: {"multiprocessing": [1.6, 2.0, 2.4]}})
    passed = verdict(gate.judge(run_, record), TASKS, "multiprocessing")
    assert passed.status == "pass"
    assert passed.noise == pytest.approx(0.4)


def test_a_run_of_few_rounds_is_judged_with_the_record_s_wider_spread() -> None:
    # two rounds that happen to agree (spread 0.0025) vs a record of spread 0.2: the noise
    # is 2 * 0.2, so a drop of 0.295 passes
    run_ = measured({"raylite": {TASKS: [170.0, 171.0]}, "multiprocessing": {TASKS: [100.0] * 2}})
    record = record_of({TASKS: {"multiprocessing": [1.6, 2.0, 2.4]}})
    passed = verdict(gate.judge(run_, record), TASKS, "multiprocessing")
    assert passed.status == "pass"
    assert passed.noise == pytest.approx(0.4)


def test_rounds_that_agree_still_allow_the_minimum_noise() -> None:
    record = record_of({TASKS: {"multiprocessing": [2.0, 2.0, 2.0]}})
    small = measured({"raylite": {TASKS: [195.0] * 3}, "multiprocessing": {TASKS: [100.0] * 3}})
    large = measured({"raylite": {TASKS: [185.0] * 3}, "multiprocessing": {TASKS: [100.0] * 3}})
    assert verdict(gate.judge(small, record), TASKS, "multiprocessing").status == "pass"
    failed = verdict(gate.judge(large, record), TASKS, "multiprocessing")
    assert failed.status == "fail"
    assert failed.noise == pytest.approx(gate.MIN_NOISE * 2.0)


def test_a_missing_peer_is_skipped_with_a_note_and_its_record_kept() -> None:
    run_ = measured(
        {"raylite": {TASKS: [200.0] * 3}, "multiprocessing": {TASKS: [100.0] * 3}, "ray": {}},
        skipped={"ray": "ModuleNotFoundError: No module named 'ray'"},
    )
    record = record_of({TASKS: {"multiprocessing": [1.9, 2.0, 2.1], "ray": [18.0, 20.0, 22.0]}})
    verdicts = gate.judge(run_, record)
    skipped = verdict(verdicts, TASKS, "ray")
    assert skipped.status == "skipped"
    assert "No module named 'ray'" in skipped.note
    assert gate.failures(verdicts) == []
    assert gate.decide_record(None, record, run_, verdicts)[0]
    assert gate.updated(record, run_)["ratios"][TASKS]["ray"]["median"] == 20.0


def test_a_peer_that_failed_every_round_is_skipped() -> None:
    run_ = measured({"raylite": {TASKS: [200.0]}, "multiprocessing": {TASKS: [None]}})
    record = record_of({TASKS: {"multiprocessing": [1.9, 2.0, 2.1]}})
    skipped = verdict(gate.judge(run_, record), TASKS, "multiprocessing")
    assert skipped.status == "skipped"
    assert "RuntimeError: boom" in skipped.note


def test_a_recorded_figure_raylite_failed_to_measure_fails() -> None:
    run_ = measured({"raylite": {TASKS: [None, None]}, "multiprocessing": {TASKS: [100.0, 100.0]}})
    record = record_of({TASKS: {"multiprocessing": [1.9, 2.0, 2.1]}})
    verdicts = gate.judge(run_, record)
    failed = verdict(verdicts, TASKS, "multiprocessing")
    assert failed.status == "fail"
    assert "raylite measured nothing (RuntimeError: boom)" in failed.note
    assert f"FAILED {TASKS} vs multiprocessing" in gate.format_gate(verdicts, record)


def test_a_record_from_another_machine_is_not_compared_nor_replaced_by_default() -> None:
    run_ = measured({"raylite": {TASKS: [100.0]}, "multiprocessing": {TASKS: [100.0]}})
    record = record_of(
        {TASKS: {"multiprocessing": [1.9, 2.0, 2.1]}, SYNC: {"ray": [4.0, 5.0, 6.0]}}, 16
    )
    verdicts = gate.judge(run_, record)
    assert [v.status for v in verdicts] == ["new"]
    write, why = gate.decide_record(None, record, run_, verdicts)
    assert not write and "16 cores" in why
    assert gate.decide_record(True, record, run_, verdicts)[0]
    assert set(gate.updated(record, run_)["ratios"]) == {TASKS}  # replaced whole


def test_check_ratios_records_then_fails_a_later_worse_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "recorded.json"
    good = results({"raylite": {TASKS: [200.0, 210.0]}, "multiprocessing": {TASKS: [100.0, 100.0]}})
    data: dict[str, object] = {}
    assert run.check_ratios(good, 1.0, None, path, data) == []
    first = json.loads(path.read_text())
    assert first["ratios"][TASKS]["multiprocessing"]["median"] == 2.05
    assert first["machine"]["load"][0] == 1.0
    assert {"cores", "date", "commit"} <= set(first["machine"])

    bad = results({"raylite": {TASKS: [100.0, 110.0]}, "multiprocessing": {TASKS: [100.0, 100.0]}})
    assert run.check_ratios(bad, 1.0, None, path, data) == [f"{TASKS} vs multiprocessing"]
    assert json.loads(path.read_text()) == first
    out = capsys.readouterr().out
    assert f"FAILED {TASKS} vs multiprocessing" in out
    entries = data["gate"]
    assert isinstance(entries, list) and len(entries) == 1
    entry = entries[0]
    assert entry["status"] == "fail"
    assert entry["now"] == gate.Ratio.of([1.0, 1.1]).to_json()
    assert entry["recorded"] == first["ratios"][TASKS]["multiprocessing"]
    assert entry["noise"] == pytest.approx(0.1025)  # the 5% floor: twice the spreads is 0.05
    assert entry["note"].startswith("down 1 from the record")


def test_every_tiny_task_row_has_its_driver_cpu_row() -> None:
    import contenders  # noqa: F401  (registers the contenders' @bench functions)

    rows = harness.BENCHMARKS
    assert set(rows[harness.DRIVER_CPU]) == set(rows[TASKS])
    assert list(harness.METRICS).index(harness.DRIVER_CPU) == list(harness.METRICS).index(TASKS) + 1


def test_throughput_stashes_the_driver_cpu_per_task() -> None:
    rate = harness.throughput(lambda k: list(range(k)), 1000, cpu_as=harness.DRIVER_CPU)
    assert rate > 0
    assert harness.stashed_driver_cpu(None, 0) >= 0.0
    with pytest.raises(RuntimeError, match="not measured"):
        harness.stashed_driver_cpu(None, 0)  # a value is handed out once


def test_collect_keeps_each_value_s_round() -> None:
    made = results({"raylite": {}})
    harness._collect(made, "raylite", [{"metric": TASKS, "value": 5.0, "n": 10}], None, 4)
    assert made.cells["raylite"][TASKS].rounds == [4]


def test_a_file_that_is_no_record_says_how_to_fix_it(tmp_path: Path) -> None:
    path = tmp_path / "recorded.json"
    assert gate.load_record(path) is None  # none yet: the first run makes it
    path.write_text("{ not json")
    with pytest.raises(ValueError, match="restore it from git, or delete it"):
        gate.load_record(path)
    path.write_text("[]")
    with pytest.raises(ValueError, match="no 'ratios' object"):
        gate.load_record(path)
