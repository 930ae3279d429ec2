"""A learned reward: labelled camera frames on disk, a success classifier trained on them, and the rule that
turns its probabilities into an episode's success. Plain Python + torch, no ROS."""
