"""Default routing of the test project: nothing of its own (the defaults apply)."""

channel_routing = []
