"""hilserl: human-in-the-loop sample-efficient RL on ROS 2 arms, with policies pretrained in Genesis."""

__version__ = "0.1.0"
