"""Suite-wide settings."""

from hypothesis import settings

# Property tests judge results, not speed: a loaded CI machine that pauses the process for a moment must not fail
# them on hypothesis' default 200 ms deadline per example.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")
