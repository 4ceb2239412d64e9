"""Suite-wide settings."""

from hypothesis import settings

# The real-broker fixtures (kafka_bootstrap, new_topic, ...): the plugin is opt-in, so a user's own test suite does
# not get them just because the tools are installed.
pytest_plugins = ["pyrallel_tools.testing.pytest_plugin"]

# Property tests judge results, not speed: a loaded CI machine that pauses the process for a moment must not fail
# them on hypothesis' default 200 ms deadline per example.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")
