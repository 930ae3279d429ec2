"""The learner's training loop and its durable state, in plain torch (no ROS)."""
