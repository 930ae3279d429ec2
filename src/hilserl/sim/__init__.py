"""The Genesis manipulation task (a Franka Panda, a cube, headless cameras) and its scripted expert.

Importing this package does not import Genesis; `hilserl.sim.task` does, when it is imported.
"""
