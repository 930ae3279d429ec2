"""End-effector kinematics of the arm, with Pinocchio: plain Python + numpy, no ROS, no torch.

One control step of an `ee_delta` policy (hilserl.kinematics.ee_control.EeController.command):
  1. forward kinematics of the TCP from the measured joint positions (`joints` order, by name),
  2. target = current TCP + the action scaled by `ee_step` (m) / `ee_rot_step` (rad), in the base frame,
  3. the target clipped to the workspace box and the orientation limits (hilserl.kinematics.workspace),
  4. damped-least-squares differential IK to joint position targets within the joint limits
     (hilserl.kinematics.arm), the gripper joints moved by the gripper value,
  5. the executed action: the pose those joint targets reach, re-expressed in the policy's action space.

The modules import only numpy and pinocchio (action_space: numpy only, so the policy config can use it
without loading Pinocchio).
"""
