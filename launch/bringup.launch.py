"""`ros2 launch hilserl bringup.launch.py [sim:=true] [num_actors:=1] [rviz:=false] ...`

Starts the graph that hilserl.graph describes: the same nodes, parameter files and remappings that
`python -m hilserl bringup` starts from a plain venv. Arguments: see `ros2 launch hilserl
bringup.launch.py --show-args` (declared from hilserl.graph.LAUNCH_ARGUMENTS).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from hilserl import graph


def as_launch_parameters(values: dict) -> dict:
    """launch_ros YAML-parses plain strings (a URDF or a path like 'true' would change type); keep them str."""
    return {k: ParameterValue(v, value_type=str) if isinstance(v, str) else v for k, v in values.items()}


def start_graph(context, *args, **kwargs):
    """Runs once the arguments are resolved: their values decide how many nodes there are."""
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in graph.LAUNCH_ARGUMENTS}
    nodes = []
    for spec in graph.build_graph(graph.parse_launch_args(values)):
        nodes.append(Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace or None,
            parameters=[*spec.param_files, as_launch_parameters(spec.overrides)],
            remappings=list(spec.remappings),
            arguments=list(spec.arguments),
            output="screen",
            emulate_tty=True,
        ))
    return nodes


def generate_launch_description():
    declared = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                for a in graph.LAUNCH_ARGUMENTS]
    return LaunchDescription([*declared, OpaqueFunction(function=start_graph)])
