"""Running a policy on the robot: observation builder, 50 Hz runtime, safety monitors, command sources, CLI."""
