"""``scrap-tools bench`` (``cli``): what a frame costs, in this process and through ROS, against the
bare model forwards. frames: the input; floor, modes, naive, stages, sets_mode: what is measured; timing:
the timers; ros_session: the node and driver processes of the ros and sets modes; report: ratios,
Markdown, PNG."""
