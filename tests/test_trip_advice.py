"""real_robot.collect: a monitor that keeps ending episodes is named to the operator, with how often and what a
careful operator does next; the monitors themselves are never loosened."""

from deploy.runtime import Phase
from deploy.safety import Trip
from deploy.session import REPEATED_TRIPS, RunLog, repeated_trip_advice
from test_collect import runtime_record


def test_advice_names_the_repeating_monitor_how_often_and_the_careful_options():
    assert repeated_trip_advice({}, 10) is None
    assert repeated_trip_advice({"motor_response": REPEATED_TRIPS - 1}, REPEATED_TRIPS - 1) is None  # not yet
    assert repeated_trip_advice({"motor_response": REPEATED_TRIPS}, 2 * REPEATED_TRIPS + 1) is None  # a minority
    advice = repeated_trip_advice({"motor_response": 12, "action_rate": 1}, 14)
    assert "motor_response ended 12 of 14 episodes" in advice and "action_rate" not in advice
    assert "--speed low" in advice and "--schedule stand" in advice


def test_the_run_log_counts_safety_trips_by_monitor_not_falls_or_timeouts(spec, tmp_path):
    ends = [Trip("motor_response", 0, "x"), Trip("orientation", 0, "fall"), Trip("timeout", 0, "limit"),
            Trip("motor_response", 0, "y"), Trip("stale_state", 0, "z")]  # fmt: skip
    step = 0
    with RunLog(tmp_path, spec, {}) as log:
        for end in ends:
            for phase, trip in [(Phase.SOFT_START, None), (Phase.POLICY, None), (Phase.DAMPING, end)]:
                log.on_step(runtime_record(spec, step, phase, trip))
                step += 1
    assert log.trips == {"motor_response": 2, "stale_state": 1}
