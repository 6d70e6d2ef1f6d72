"""Stage lines of long jobs: numbered, timed, with a time left that learns from the stages measured so far."""

import json

import pytest

from flow_omni.bench.progress import RunWatch, logged_steps
from flow_omni.stages import Stage, StageReporter, clock_time


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def reporter(stages):
    clock, lines = Clock(), []
    return StageReporter("demo", stages, write=lines.append, clock=clock), clock, lines


def test_each_stage_prints_its_number_the_elapsed_time_and_the_time_left():
    r, clock, lines = reporter(
        [
            Stage("corpus", "corpus", 100.0),
            Stage("train 1", "training 1/2", 200.0, kind="train"),
            Stage("train 2", "training 2/2", 200.0, kind="train"),
            Stage("report", "report", 50.0),
        ]
    )
    r.start("corpus", "data/synth")
    assert lines[-1] == "[demo 1/4] corpus: data/synth | 0:00 elapsed, about 9:10 left"
    clock.now = 25.0  # the corpus took a quarter of its time (a cache, say): that says nothing of training
    r.start("train 1")
    assert lines[-1] == "[demo 2/4] training 1/2 | 0:25 elapsed, about 7:30 left"
    clock.now = 125.0
    r.note("step 125/500", fraction=0.25)  # a quarter in 100 s: 300 s more, then 200 s and 50 s expected
    assert lines[-1] == "[demo] step 125/500 | 2:05 elapsed, about 9:10 left"
    r.note("step 10/500", fraction=0.02)  # too early to extrapolate: 200 s expected, 100 s spent
    assert lines[-1] == "[demo] step 10/500 | 2:05 elapsed, about 5:50 left"
    clock.now = 425.0
    r.start("train 2")  # the first training took 400 s, twice what was expected: so will the second
    assert r.measured("train 1") == 400.0 and r.measured("train 2") is None
    assert lines[-1] == "[demo 3/4] training 2/2 | 7:05 elapsed, about 7:30 left"  # 2 x 200 s + 50 s
    clock.now = 800.0
    r.start("report")
    clock.now = 802.0
    assert r.finish() == 802.0 and lines[-1] == "[demo] done in 13:22"


def test_skipped_stages_count_no_time_and_unknown_ones_show_no_estimate():
    r, clock, lines = reporter([Stage("corpus", "corpus", 100.0), Stage("train", "training"), Stage("after", "after")])
    r.skip("corpus", "data/synth is built")
    assert lines[-1] == "[demo 1/3] corpus: data/synth is built"
    assert r.measured("corpus") is None
    clock.now = 30.0
    r.start("train")
    assert lines[-1] == "[demo 2/3] training | 0:30 elapsed"  # nothing says how long training takes
    clock.now = 90.0
    r.expect("after", 20.0)
    r.start("after")
    assert lines[-1] == "[demo 3/3] after | 1:30 elapsed, about 0:20 left"  # a skipped stage sets no speed
    with pytest.raises(KeyError, match="no stage 'nope'"):
        r.start("nope")
    with pytest.raises(ValueError, match="unique"):
        StageReporter("x", [Stage("a", "a"), Stage("a", "b")])


def test_clock_time():
    assert [clock_time(s) for s in (0, 59.6, 95, 3725)] == ["0:00", "1:00", "1:35", "1:02:05"]


def test_runs_in_other_processes_are_followed_through_their_step_logs(tmp_path):
    from flow_omni.bench import RobustnessConfig, VariantSpec

    cfg = RobustnessConfig(out_dir=str(tmp_path), variants=[VariantSpec("a"), VariantSpec("b")], seeds=[0])
    todo = [(v, 0) for v in cfg.variants]
    r, clock, lines = reporter([Stage("runs", "training and scoring 2 runs, 2 side by side", 100.0)])
    r.start("runs")
    watch = RunWatch(cfg, todo, 10, r, progress=False, train_share=0.5, clock=clock)
    run_a = tmp_path / "runs" / "a-seed0"
    run_a.mkdir(parents=True)
    assert logged_steps(run_a / "train_log.jsonl") == 0  # not started yet
    log = "".join(json.dumps({"step": k, "loss": 1.0, "pad": "x" * 300}) + "\n" for k in range(6))
    (run_a / "train_log.jsonl").write_text(log + '{"step": 6, "lo')  # the last line is still being written
    assert logged_steps(run_a / "train_log.jsonl") == 6
    clock.now = 61.0
    watch.poll()  # no bar: a line a minute says how far the runs are
    assert watch.steps_done() == 6 and lines[-1].startswith("[demo] training: 6/20 steps of 2 runs | 1:01 elapsed")
    (run_a / "model").mkdir()
    (run_a / "model" / "model.safetensors").write_bytes(b"")
    watch.poll()
    assert lines[-1].startswith("[demo] a-seed0 trained; scoring it") and watch.steps_done() == 10
    assert watch.fraction() == pytest.approx(0.25)  # half the steps, no run scored
    watch.scored_run("a-seed0")
    assert lines[-1].startswith("[demo] a-seed0 scored (1/2 runs done)")
    assert watch.fraction() == pytest.approx(0.5)
    watch.scored_run("b-seed0")
    assert watch.fraction() == pytest.approx(1.0) and watch.steps_done() == 20
    watch.close()
