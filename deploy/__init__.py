"""Running a policy on the robot: 50 Hz runtime, safety monitors, command sources, the robot session, CLI."""
