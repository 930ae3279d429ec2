"""ROS 2 nodes: thin glue from topics to the plain-torch core. Only this package imports rclpy."""
